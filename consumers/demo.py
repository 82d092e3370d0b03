"""The main job: local broker, tiny checkpoints, fast tier and gateway, sample traffic,
and every reply printed as an overlay websocket client receives it.

With ``--exit`` it stops after N items and succeeds only when every item got its reply
over the websocket; its last line is one JSON summary (latency: produce to receipt).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import orjson
from aiokafka import TopicPartition
from websockets.asyncio.client import connect

from producers.client import SubmissionClient
from producers.samples import sample_item
from stream.kafka_io import bootstrap_for, local_kafka, make_consumer, partitions_of
from stream.settings import FastTierSettings, GatewaySettings

from consumers.services import fast_tier_service, gateway_service, load_fast_runner, prepare_topics


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 1)


class Tally:
    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}
        self.latency_ms: dict[str, float] = {}
        self.by_tier: dict[str, int] = {}
        self.dead_lettered: set[str] = set()
        self.settled = asyncio.Event()  # every item replied to or dead-lettered
        self.expected = 0

    def _check_settled(self) -> None:
        if self.expected and len(self.latency_ms) + len(self.dead_lettered) >= self.expected:
            self.settled.set()

    def record_dead_letter(self, item_id: str | None) -> None:
        if item_id in self.sent_at and item_id not in self.latency_ms:
            self.dead_lettered.add(item_id)
            print(f"dead-lettered: {item_id}", flush=True)
            self._check_settled()

    def record(self, reply: dict) -> float | None:
        item_id = reply["item_id"]
        if item_id not in self.sent_at or item_id in self.latency_ms:
            return None
        ms = (time.monotonic() - self.sent_at[item_id]) * 1000
        self.latency_ms[item_id] = ms
        self.by_tier[reply["tier"]] = self.by_tier.get(reply["tier"], 0) + 1
        self._check_settled()
        return ms


async def watch_room(url: str, tally: Tally, connected: asyncio.Event) -> None:
    async with connect(url, max_size=2**20) as ws:
        hello = orjson.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        connected.set()
        async for message in ws:
            frame = orjson.loads(message)
            if frame.get("type") != "reply":
                continue
            reply = frame["reply"]
            ms = tally.record(reply)
            if ms is not None:
                print(
                    f"[{reply['room']}] {reply['in_reply_to']['display_name']} <- "
                    f"({reply['cue']['emotion']}, {reply['tier']}, {ms:.0f} ms) {reply['text']}",
                    flush=True,
                )
            await ws.send(orjson.dumps({"type": "ack", "reply_id": reply["reply_id"]}).decode())


async def watch_dead_letters(bootstrap: str, topic: str, tally: Tally, ready: asyncio.Event) -> None:
    consumer = make_consumer(bootstrap, None, "idolstream-demo-dlq", auto_offset_reset="latest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        ready.set()
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    tally.record_dead_letter(orjson.loads(record.value).get("item_id"))
    finally:
        await consumer.stop()


async def run_demo(items: int, exit_when_done: bool, rooms: int, interval_s: float, timeout_s: float) -> int:
    """Run the demo; a local broker that the demo started is stopped again at the end."""
    fast_settings = FastTierSettings()
    broker = local_kafka(fast_settings)
    started_here = not fast_settings.kafka_bootstrap and broker.pid() is None
    print("starting the local broker (or using KAFKA_BOOTSTRAP)…", file=sys.stderr, flush=True)
    bootstrap = await asyncio.to_thread(bootstrap_for, fast_settings, start_local=True)
    try:
        return await _demo(bootstrap, fast_settings, items, exit_when_done, rooms, interval_s, timeout_s)
    finally:
        if started_here:
            await asyncio.to_thread(broker.down)


async def _demo(bootstrap: str, fast_settings: FastTierSettings, items: int, exit_when_done: bool, rooms: int,
                interval_s: float, timeout_s: float) -> int:
    gateway_settings = GatewaySettings()
    await prepare_topics(fast_settings, bootstrap)
    print("loading the fast model (building tiny checkpoints if missing)…", file=sys.stderr, flush=True)
    runner = await asyncio.to_thread(load_fast_runner, fast_settings)
    room_ids = [f"demo-room-{i + 1}" for i in range(rooms)]
    tally = Tally()
    tally.expected = items
    async with gateway_service(gateway_settings, bootstrap) as (gateway, _), \
            fast_tier_service(fast_settings, bootstrap, runner) as (_, fast_task):
        base = f"http://{gateway_settings.host}:{gateway.port}"
        print(f"overlay page: {base}/?room={room_ids[0]}  (model {runner.spec.id}, {runner.processor_kind} processor)",
              file=sys.stderr, flush=True)
        dlq_ready = asyncio.Event()
        watchers = [asyncio.create_task(watch_dead_letters(bootstrap, fast_settings.topics.dlq, tally, dlq_ready))]
        await asyncio.wait_for(dlq_ready.wait(), 10)
        for room in room_ids:
            connected = asyncio.Event()
            watchers.append(asyncio.create_task(watch_room(f"ws://{gateway_settings.host}:{gateway.port}/ws/{room}", tally, connected)))
            await asyncio.wait_for(connected.wait(), 10)
        async with SubmissionClient(bootstrap, fast_settings.topics, "idolstream-demo") as client:
            for i in range(items):
                submission = sample_item(i).to_submission(room_ids[i % rooms])
                tally.sent_at[submission.item_id] = time.monotonic()
                await client.submit(submission)
                if interval_s:
                    await asyncio.sleep(interval_s)  # the offered rate of sample traffic
            if items:
                done = asyncio.ensure_future(tally.settled.wait())
                await asyncio.wait({done, fast_task, *watchers}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
                done.cancel()
            if not exit_when_done:
                print(f"demo running: open {base}/?room={room_ids[0]} in a browser (or an OBS browser source); "
                      "Ctrl-C stops", file=sys.stderr, flush=True)
                n = items
                while not fast_task.done():  # keep the overlay alive with a trickle of sample traffic
                    await asyncio.sleep(4.0)
                    await client.submit(sample_item(n).to_submission(room_ids[n % rooms]))
                    n += 1
        for task in watchers:
            task.cancel()
    runner.close()
    latencies = list(tally.latency_ms.values())
    summary = {
        "items": items,
        "replied": len(latencies),
        "dead_lettered": len(tally.dead_lettered),
        "by_tier": tally.by_tier,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "model": runner.spec.id,
        "kafka_bootstrap": bootstrap,
    }
    print(orjson.dumps(summary).decode(), flush=True)
    return 0 if len(latencies) == items else 1
