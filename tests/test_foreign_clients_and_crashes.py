"""What other clients send, and crashes: a librdkafka producer (kcat), undecodable batches,
and a fast tier killed with escalations and drawing requests in flight while the deep and
draw tiers are down.

One stack for the module: its topics and a fast tier as a real process (escalation and
drawing on, no deep or draw tier running, so every escalation ends with the fast tier's
draft at its deadline, and every drawing request with her apology).
The crash test kills that process and starts its successor, so it runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections import Counter

import httpx
import orjson
import pytest

from consumers.services import prepare_topics
from producers.client import SubmissionClient
from producers.samples import sample_item, sample_reply
from stream.kafka_io import ensure_topics, read_recent
from stream.local_kafka import find_free_port
from stream.settings import FastTierSettings
from stream.topics import TopicSpec
from tests.processes import service_env, start_service, stop
from tests.stack import (
    SECRET, gateway_settings, next_reply, open_overlay, overlay_token, produce_replies, read_topic, running_gateway,
    scrape, total,
)

pytestmark = pytest.mark.kafka
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
MATHS = "Can you solve this one from my homework? 12 + 30 x 2 = ?"
DRAW = "Draw me with my cat!"
DEADLINE_MS = 4000


def kcat_produce(bootstrap: str, topic: str, key: str, values: list[bytes], codec: str = "none",
                 partitioner: str | None = "murmur2_random") -> None:
    """Produce with librdkafka's own client, one line per value (JSON has no raw newline)."""
    args = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-k", key, "-z", codec, "-X", "linger.ms=50"]
    if partitioner:
        args += ["-X", f"topic.partitioner={partitioner}"]
    subprocess.run(args, input=b"\n".join(values) + b"\n", check=True, capture_output=True, timeout=60)


def answered(replies: list[dict]) -> Counter:
    return Counter(r["item_id"] for r in replies if r["role"] == "answer")


class ModuleStack:
    def __init__(self, bootstrap: str, tmp) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"m{uuid.uuid4().hex[:8]}."
        self.settings = FastTierSettings(kafka_bootstrap=bootstrap, topic_prefix=self.prefix, topic_partitions=2)
        self.admin_port = find_free_port()
        self.env = service_env(
            bootstrap, self.prefix, escalate="true", deep_deadline_ms=str(DEADLINE_MS), max_age_s="600",
            draw_deadline_ms=str(DEADLINE_MS), draw_grace_ms="0",
            user_max_items="0", room_max_replies="0", breaker_failures="1000", admin_port=str(self.admin_port),
        )
        self.log = tmp / "fast-tier.log"
        self.fast: subprocess.Popen | None = None

    def start_fast_tier(self) -> None:
        self.fast = start_service("fast-tier", self.env, self.log)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory, tiny_checkpoints):
    module = ModuleStack(kafka_bootstrap, tmp_path_factory.mktemp("stack"))
    asyncio.run(prepare_topics(module.settings, kafka_bootstrap))
    module.start_fast_tier()
    try:
        yield module
    finally:
        stop(module.fast)


async def test_an_item_from_kcat_is_answered_whatever_its_codec(stack):
    topic = stack.settings.topics.fan_images
    items = {codec: sample_item(40 + i).to_submission("room-kcat", text=f"hello in {codec}!")
             for i, codec in enumerate(CODECS)}
    for codec, item in items.items():
        kcat_produce(stack.bootstrap, topic, item.room, [item.to_json()], codec)
    replies = await read_topic(
        stack.bootstrap, stack.settings.topics.replies,
        lambda r: set(answered(r)) >= {i.item_id for i in items.values()}, timeout=120,
    )
    by_item = {r["item_id"]: r for r in replies if r["role"] == "answer"}
    for codec, item in items.items():
        assert by_item[item.item_id]["in_reply_to"]["display_name"] == item.user.display_name, codec
    assert stack.fast.poll() is None, stack.log_tail()


async def test_murmur2_random_keeps_a_room_on_the_partition_our_producer_uses(stack):
    topic = f"{stack.prefix}partitioner-check"
    await ensure_topics(stack.bootstrap, [TopicSpec(topic, 6, {})])
    rooms = [f"room-{n}" for n in range(24)]
    async with SubmissionClient(stack.bootstrap) as client:
        ours = {room: (await client.producer.send_and_wait(topic, b"aiokafka", key=room.encode())).partition
                for room in rooms}
    for room in rooms:
        kcat_produce(stack.bootstrap, topic, room, [b"murmur2_random"])
        kcat_produce(stack.bootstrap, topic, room, [b"default"], partitioner=None)
    records = await read_topic(stack.bootstrap, topic, lambda r: len(r) >= 3 * len(rooms), decode=lambda r: r)
    placed = {(r.key.decode(), r.value): r.partition for r in records}
    assert {room: placed[(room, b"murmur2_random")] for room in rooms} == ours
    # librdkafka's default (consistent_random, CRC32) puts rooms elsewhere: the setting matters.
    assert any(placed[(room, b"default")] != ours[room] for room in rooms)


async def test_a_batch_no_codec_can_read_is_dead_lettered_and_the_next_item_answered(
    kafka_bootstrap, tmp_path, tiny_checkpoints
):
    # A fast tier whose codec library is missing (as it was before cramjam was a dependency):
    # lz4, snappy and zstd batches cannot be decoded at all.
    prefix = f"u{uuid.uuid4().hex[:8]}."
    settings = FastTierSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topic_partitions=2)
    await prepare_topics(settings, kafka_bootstrap)
    admin_port = find_free_port()
    env = service_env(kafka_bootstrap, prefix, escalate="false", user_max_items="0", room_max_replies="0",
                      max_age_s="600", admin_port=str(admin_port))
    env["PYTHONPATH"] = str(no_codecs(tmp_path))
    room, topic = "room-codecs", settings.topics.fan_images
    before, after = (sample_item(60 + n).to_submission(room) for n in range(2))
    # lz4: one batch of two items; snappy and zstd: one item each.
    unreadable = {codec: [sample_item(70 + n + k).to_submission(room) for k in range(2 if codec == "lz4" else 1)]
                  for n, codec in enumerate(["lz4", "snappy", "zstd"])}
    kcat_produce(kafka_bootstrap, topic, room, [before.to_json()], "gzip")
    for codec, batch in unreadable.items():
        kcat_produce(kafka_bootstrap, topic, room, [item.to_json() for item in batch], codec)
    kcat_produce(kafka_bootstrap, topic, room, [after.to_json()])
    fast = start_service("fast-tier", env, tmp_path / "fast-tier.log")
    try:
        replies = await read_topic(kafka_bootstrap, settings.topics.replies,
                                   lambda r: after.item_id in answered(r), timeout=120)
        letters = await read_topic(kafka_bootstrap, settings.topics.dlq, lambda r: len(r) >= 3, timeout=60)
        metrics = await scrape(f"http://127.0.0.1:{admin_port}/metrics")
        assert fast.poll() is None, "the fast tier stopped"
    finally:
        stop(fast)
    assert [r["item_id"] for r in replies] == [before.item_id, after.item_id]  # in order, nothing else
    assert [letter["reason"] for letter in letters] == ["undecodable_batch"] * 3
    skipped = sorted((letter["source"]["offset"], letter["last_offset"], letter["detail"]) for letter in letters)
    # `before` is offset 0, then lz4 at 1..2, snappy at 3, zstd at 4; each letter names its codec.
    assert [(first, last) for first, last, _ in skipped] == [(1, 2), (3, 3), (4, 4)]
    assert [codec in detail for (_, _, detail), codec in zip(skipped, ["lz4", "snappy", "zstd"])] == [True] * 3
    assert all(letter["source"]["topic"] == topic and letter["original_size"] is None for letter in letters)
    assert total(metrics, "idolstream_dead_letters_total", reason="undecodable_batch") == 3


async def test_escalations_and_drawings_in_flight_survive_a_killed_fast_tier_while_deep_and_draw_are_down(stack):
    gateway = gateway_settings(stack.bootstrap, stack.prefix, ack_timeout_s=0)
    rooms = [f"crash-{n}" for n in range(3)]
    async with running_gateway(gateway) as gw:
        overlays = {room: (await open_overlay(gw.port, room, overlay_token(room)))[0] for room in rooms}
        items = [sample_item(100 + n).to_submission(rooms[n % len(rooms)], text=DRAW if n % 3 == 0 else MATHS)
                 for n in range(24)]
        async with SubmissionClient(stack.bootstrap, stack.settings.topics) as client:
            for item in items:
                await client.submit(item)
        # Kill the fast tier once several items were escalated (holding lines out), drafts still due.
        await read_topic(stack.bootstrap, stack.settings.topics.replies,
                         lambda r: sum(x["role"] == "holding" for x in r) >= 6, timeout=120)
        stack.fast.kill()
        stack.fast.wait(30)
        at_kill = await read_all(stack.bootstrap, stack.settings.topics.replies)
        in_flight = {r["item_id"] for r in at_kill if r["role"] == "holding"} - set(answered(at_kill))
        assert in_flight, "no escalation was left waiting at the kill"
        drawings = {r["item_id"] for r in at_kill if r["role"] == "holding" and r["route_reason"] == "draw_request"}
        assert in_flight & drawings, "no drawing request was left waiting at the kill"
        stack.start_fast_tier()

        shown: dict[str, list[dict]] = {room: [] for room in rooms}
        want = {item.item_id for item in items}

        async def watch(room: str) -> None:
            ws = overlays[room]
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "reply":
                    shown[room].append(frame["reply"])
                    await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())

        watchers = [asyncio.create_task(watch(room)) for room in rooms]
        try:
            with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
                async with asyncio.timeout(120):
                    while not want <= {r["item_id"] for rs in shown.values() for r in rs if r["role"] == "answer"}:
                        await asyncio.wait(watchers, timeout=0.2)
                        for task in watchers:
                            if task.done():
                                task.result()
        finally:
            for task in watchers:
                task.cancel()
            for ws in overlays.values():
                await ws.close()
    shown_answers = Counter(r["item_id"] for rs in shown.values() for r in rs if r["role"] == "answer")
    assert set(shown_answers) == want, f"never answered: {want - set(shown_answers)}\n{stack.log_tail()}"
    assert max(shown_answers.values()) == 1  # each item shown answered exactly once
    asked = {item.item_id for item in items if item.text == DRAW}
    sorry = [r for rs in shown.values() for r in rs if r["role"] == "answer" and r["item_id"] in asked]
    assert {(r["tier"], r["degraded"]) for r in sorry} == {("fallback", "draw_deadline")}, sorry
    on_topic = answered(await read_all(stack.bootstrap, stack.settings.topics.replies))
    print(f"{len(in_flight)} escalations in flight at the kill; answers on the replies topic: "
          f"{sum(on_topic.values())} for {len(want)} items ({sum(on_topic.values()) - len(want)} duplicates, "
          "dropped by the gateway)")


async def read_all(bootstrap: str, topic: str) -> list[dict]:
    """Every record of a test's topic so far, as JSON."""
    return [orjson.loads(r.value) for r in await read_recent(bootstrap, topic, 3600, "test-read-all")]


async def test_gateways_show_compressed_replies_and_one_without_the_codec_skips_them(
    kafka_bootstrap, tmp_path, topic_prefix
):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, ack_timeout_s=0)
    topic, room = settings.topics.replies, "room-replies"
    port = find_free_port()
    env = service_env(kafka_bootstrap, topic_prefix, port=str(port), overlay_secret=SECRET)
    env["PYTHONPATH"] = str(no_codecs(tmp_path))
    async with running_gateway(settings) as gateway:  # this one has every codec
        bare = start_service("gateway", env, tmp_path / "gateway.log")
        try:
            await until_ready(port)
            full, _ = await open_overlay(gateway.port, room, overlay_token(room))
            lacking, _ = await open_overlay(port, room, overlay_token(room))
            first, compressed, last = (sample_reply(room, n) for n in range(3))
            await produce_replies(kafka_bootstrap, topic, [first])
            kcat_produce(kafka_bootstrap, topic, room, [compressed.to_json()], "lz4")
            await produce_replies(kafka_bootstrap, topic, [last])
            assert [(await next_reply(full))["item_id"] for _ in range(3)] == [
                first.item_id, compressed.item_id, last.item_id]
            assert [(await next_reply(lacking))["item_id"] for _ in range(2)] == [first.item_id, last.item_id]
            metrics = await scrape(f"http://127.0.0.1:{port}/metrics")
            assert total(metrics, "idolstream_ws_invalid_replies_total") == 1
            assert bare.poll() is None
        finally:
            stop(bare)


def no_codecs(tmp_path) -> object:
    """A directory for PYTHONPATH in which cramjam (snappy, lz4, zstd) cannot be imported."""
    blocked = tmp_path / "no-codecs" / "cramjam"
    blocked.mkdir(parents=True, exist_ok=True)
    (blocked / "__init__.py").write_text('raise ImportError("cramjam left out on purpose")\n')
    return blocked.parent


async def until_ready(port: int, timeout_s: float = 120) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.1)  # poll interval of a readiness check
