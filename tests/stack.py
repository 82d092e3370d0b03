"""A running fast tier + gateway on the session's broker, with helpers to drive it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import orjson
from aiokafka import TopicPartition
from websockets.asyncio.client import ClientConnection, connect

from consumers.services import fast_tier_service, gateway_service, prepare_topics
from producers.client import SubmissionClient
from producers.samples import sample_item
from stream.kafka_io import make_consumer, partitions_of
from stream.metrics import FastTierMetrics
from stream.settings import FastTierSettings, GatewaySettings

WAIT_S = 60  # generous upper bound for one reply on a loaded CI machine


@dataclass
class Stack:
    bootstrap: str
    fast: FastTierSettings
    gateway_port: int
    client: SubmissionClient
    metrics: FastTierMetrics
    overlays: list[ClientConnection] = field(default_factory=list)

    def submission(self, room: str, seed: int = 0, **fields):
        return sample_item(seed).to_submission(room, **fields)

    async def submit(self, room: str, seed: int = 0, **fields):
        submission = self.submission(room, seed, **fields)
        await self.client.submit(submission)
        return submission

    async def overlay(self, room: str) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{self.gateway_port}/ws/{room}")
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello == {"type": "hello", "room": room}
        self.overlays.append(ws)
        return ws


async def next_reply(ws: ClientConnection, timeout: float = WAIT_S) -> dict:
    frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert frame["type"] == "reply", frame
    return frame["reply"]


async def read_topic(bootstrap: str, topic: str, until, timeout: float = WAIT_S) -> list[dict]:
    """Records of `topic` from the beginning, as JSON, until `until(records)` holds."""
    consumer = make_consumer(bootstrap, None, "test-reader")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[dict] = []
        async with asyncio.timeout(timeout):
            while not until(records):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(orjson.loads(r.value) for r in batch)
        return records
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running_stack(bootstrap: str, prefix: str, runner, **fast_overrides):
    fast = FastTierSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, group_id=f"{prefix}fast", topic_partitions=2,
        session_timeout_ms=6000, **fast_overrides,
    )
    gateway = GatewaySettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, port=0)
    await prepare_topics(fast, bootstrap)
    metrics = FastTierMetrics()
    async with gateway_service(gateway, bootstrap) as (gw, _), fast_tier_service(fast, bootstrap, runner, metrics):
        async with SubmissionClient(bootstrap, fast.topics) as client:
            stack = Stack(bootstrap, fast, gw.port, client, metrics)
            try:
                yield stack
            finally:
                for ws in stack.overlays:
                    await ws.close()
