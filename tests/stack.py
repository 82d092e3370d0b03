"""A running stack (fast tier, optional deep tier, gateway) on the session's broker, with helpers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import orjson
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from consumers.model_slot import ModelSlot
from consumers.services import RunningWorker, deep_tier_service, fast_tier_service, gateway_service, prepare_topics
from producers.client import SubmissionClient
from producers.samples import sample_item
from stream.kafka_io import make_consumer, make_producer, partitions_of
from stream.metrics import GatewayMetrics, WorkerMetrics
from stream.settings import DeepTierSettings, FastTierSettings, GatewaySettings
from stream.tokens import issue_token

WAIT_S = 60  # generous upper bound for one reply on a loaded CI machine
SECRET = "test-overlay-secret-0123456789abcdef"  # the gateways' room-token secret in tests


@dataclass
class Stack:
    bootstrap: str
    fast: FastTierSettings
    deep: DeepTierSettings
    gateway_port: int
    client: SubmissionClient
    metrics: WorkerMetrics
    fast_worker: RunningWorker
    deep_metrics: WorkerMetrics | None = None
    deep_worker: RunningWorker | None = None
    overlays: list[ClientConnection] = field(default_factory=list)

    def submission(self, room: str, seed: int = 0, **fields):
        return sample_item(seed).to_submission(room, **fields)

    async def submit(self, room: str, seed: int = 0, **fields):
        submission = self.submission(room, seed, **fields)
        await self.client.submit(submission)
        return submission

    async def overlay(self, room: str) -> ClientConnection:
        ws, hello = await open_overlay(self.gateway_port, room, overlay_token(room))
        assert hello["type"] == "hello" and hello["room"] == room
        self.overlays.append(ws)
        return ws


def overlay_token(room: str, ttl_s: float = 600, now: float | None = None) -> str:
    return issue_token(SECRET.encode(), room, ttl_s, now)


async def open_overlay(port: int, room: str, token: str | None, after: str | None = None,
                       **connect_args) -> tuple[ClientConnection, dict]:
    """An overlay connection and the gateway's hello frame."""
    query = {k: v for k, v in (("token", token), ("after", after)) if v is not None}
    ws = await connect(f"ws://127.0.0.1:{port}/ws/{room}?{urlencode(query)}", **connect_args)
    return ws, orjson.loads(await asyncio.wait_for(ws.recv(), 10))


async def next_frame(ws: ClientConnection, timeout: float = WAIT_S) -> dict:
    """The next reply frame (heartbeats skipped), acked at once like an overlay with no bubble time."""
    async with asyncio.timeout(timeout):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] != "heartbeat":
                break
    assert frame["type"] == "reply", frame
    await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())
    return frame


async def frames_until(ws, done, timeout: float = WAIT_S) -> list[dict]:
    """Reply frames (raw text kept under "_raw") until `done(replies)` holds."""
    replies: list[dict] = []
    async with asyncio.timeout(timeout):
        while not done(replies):
            raw = await ws.recv()
            frame = orjson.loads(raw)
            if frame["type"] == "reply":
                replies.append({**frame["reply"], "_raw": raw})
                await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())
    return replies


def answers(replies: list[dict]) -> list[dict]:
    return [r for r in replies if r["role"] == "answer"]


async def next_reply(ws: ClientConnection, timeout: float = WAIT_S) -> dict:
    return (await next_frame(ws, timeout))["reply"]


def as_json(record) -> dict:
    return orjson.loads(record.value)


async def read_topic(bootstrap: str, topic: str, until, timeout: float = WAIT_S, decode=as_json) -> list:
    """Records of `topic` from the beginning, as JSON (or as `decode` makes them), until `until(records)` holds."""
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
                    records.extend(decode(r) for r in batch)
        return records
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running_stack(bootstrap: str, prefix: str, runner, deep_runner=None, deep_overrides=None, *,
                        fast_slot: ModelSlot | None = None, fast_moderation=None, **fast_overrides):
    """Gateway + fast tier (+ deep tier when `deep_runner` is given).

    Escalation and rate limits are off unless a test turns them on, so a test sees only
    the behaviour it is about. The persona checks are on for a trained (demo) model only:
    random weights say random things, which the checks would replace by persona lines.
    """
    defaults = dict(escalate=deep_runner is not None, user_max_items=0, room_max_replies=0,
                    check_replies=runner.spec.demo)
    fast = FastTierSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, group_id=f"{prefix}fast", topic_partitions=2,
        session_timeout_ms=6000, **{**defaults, **fast_overrides},
    )
    deep = DeepTierSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, deep_group_id=f"{prefix}deep", topic_partitions=2,
        session_timeout_ms=6000, **{"check_replies": False, **(deep_overrides or {})},
    )
    gateway = gateway_settings(bootstrap, prefix)
    await prepare_topics(fast, bootstrap)
    metrics = WorkerMetrics("fast")
    slot = fast_slot or ModelSlot.around(runner, metrics)
    async with contextlib.AsyncExitStack() as stack:
        gw, _ = await stack.enter_async_context(gateway_service(gateway, bootstrap))
        deep_metrics = deep_worker = None
        if deep_runner is not None:
            deep_metrics = WorkerMetrics("deep")
            deep_worker = await stack.enter_async_context(
                deep_tier_service(deep, bootstrap, ModelSlot.around(deep_runner, deep_metrics), deep_metrics)
            )
        worker = await stack.enter_async_context(fast_tier_service(fast, bootstrap, slot, metrics, fast_moderation))
        client = await stack.enter_async_context(SubmissionClient(bootstrap, fast.topics))
        result = Stack(bootstrap, fast, deep, gw.port, client, metrics, worker, deep_metrics, deep_worker)
        try:
            yield result
        finally:
            for ws in result.overlays:
                await ws.close()


def gateway_settings(bootstrap: str, prefix: str, **overrides) -> GatewaySettings:
    return GatewaySettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=2,
                           **{"port": 0, "overlay_secret": SECRET, **overrides})


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings, metrics: GatewayMetrics | None = None):
    """A started gateway alone (no tiers): tests put replies on the topic themselves."""
    await prepare_topics(settings, settings.kafka_bootstrap)
    async with gateway_service(settings, settings.kafka_bootstrap, metrics) as (gateway, _):
        yield gateway


async def produce_replies(bootstrap: str, topic: str, replies) -> list[str]:
    """Put replies on the replies topic, keyed by room as the tiers do; their cursors, in order."""
    producer = make_producer(bootstrap, "test-replies")
    await producer.start()
    try:
        cursors = []
        for reply in replies:
            meta = await producer.send_and_wait(topic, reply.to_json(), key=reply.room.encode())
            cursors.append(f"{meta.partition}-{meta.offset}")
        return cursors
    finally:
        await producer.stop()


async def scrape(url: str) -> dict[str, list]:
    """name -> [(labels, value)] of every sample on a /metrics page."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(url, timeout=10)).text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == want for k, want in labels.items()))


class RecordingRunner:
    """A real model runner, with the size of every model call kept (one call is one micro-batch)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.spec = runner.spec
        self.batch_sizes: list[int] = []

    def generate(self, requests, options=None):
        self.batch_sizes.append(len(requests))
        return self.runner.generate(requests, options)

    def close(self) -> None:
        pass
