"""The main job: local broker, the demo model, fast, deep and draw tiers, gateway, sample
traffic, and every reply printed as an overlay websocket client receives it.

The fast tier runs the demo model (``demo-qwen3vl``, a small Qwen3-VL trained here from
scratch; the first run trains it, a few minutes with a progress bar) unless
IDOLSTREAM_MODEL_ID names another. With the demo model the traffic is held-out synthetic
pictures whose facts are known, and each reply is printed beside what its picture shows;
with any other model it is the generic sample pictures.

The sample traffic holds items that escalate (maths questions, long letters, packed
comment walls), every seventh item a fan asking her to draw (the draw tier answers with a
picture from the tiny Qwen-Image pipeline, shown in the overlay's bubble) and, every tenth
item, a replay from a chat bot's backlog created long ago, which must be shed as stale
rather than answered late.

With ``--exit`` it stops after N items and succeeds only when every fresh item got its
answer over the websocket and every replay was shed; its last line is one JSON summary
(latency: produce to receipt of the answer).

Without it, the demo runs until Ctrl-C (SIGINT) or SIGTERM. The first one stops things
in order: the demo's own clients, then the services (they finish in-flight work and
commit), then the local broker if the demo started it; the exit status is then 128 plus
the signal's number (130 for Ctrl-C), as shells report a job stopped by a signal. The
broker runs in a session of its own, so a terminal's Ctrl-C does not reach it and it is
still there while the services stop. A second Ctrl-C quits at once (Python's default),
possibly leaving the broker running (`idolstream kafka down` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
from aiokafka import TopicPartition
from pydantic import SecretStr
from websockets.asyncio.client import connect

from producers.client import SubmissionClient
from producers.samples import sample_item
from producers.training_data import held_out_draw_requests, held_out_submissions
from stream.contracts import Submission, new_id, utcnow
from stream.learning.demo_model import DEMO_MODEL_ID, build_missing_checkpoints
from stream.learning.replies import names_colour, welcomes_back
from stream.models.registry import ModelRegistry
from stream.persona import Persona
from stream.kafka_io import bootstrap_for, local_kafka, make_consumer, partitions_of
from stream.metrics import DrawMetrics, WorkerMetrics
from stream.errors import IdolstreamError
from stream.settings import DeepTierSettings, DrawTierSettings, FastTierSettings, GatewaySettings
from stream.tokens import issue_token

from consumers.services import (
    PROJECT_ROOT,
    deep_tier_service,
    draw_tier_service,
    fast_tier_service,
    gateway_service,
    load_draw_slot,
    load_slot,
    prepare_topics,
)

REPLAY_EVERY = 10  # every tenth sample item is an old one replayed from a bot's backlog
DRAW_EVERY = 7  # every seventh, a fan asking her to draw
DRAW_ASK = "Draw me with my cat!"  # the generic samples' request (the held-out ones have their own)
REPLAY_AGE = timedelta(minutes=2)
HELD_OUT_SEED = 7  # the demo's pictures: held out from the demo model's training set
HELD_OUT_POOL = 60  # pictures drawn once and sent round again with fresh item ids
FANS_LISTENING = re.compile(r"fans app listening on http://[^:\s]+:(\d+)")
FANS_START_S = 120.0  # the fans app's start (its tables replayed), and its stop


class Traffic:
    """The demo's items: held-out pictures with known facts for the demo model, else generic samples."""

    def __init__(self, held_out: bool, count: int) -> None:
        self.pool = held_out_submissions(min(max(count, 1), HELD_OUT_POOL), HELD_OUT_SEED) if held_out else []
        asks = min(max(count // DRAW_EVERY, 1), HELD_OUT_POOL)
        self.asks = held_out_draw_requests(asks, HELD_OUT_SEED) if held_out else []

    def item(self, n: int, room: str, created_at=None) -> tuple[Submission, object | None]:
        """The n-th submission for `room` and, for a held-out picture, its facts; every
        `DRAW_EVERY`-th a fan asking her to draw (a fresh one, never a replay)."""
        ask = n % DRAW_EVERY == DRAW_EVERY - 1 and created_at is None
        if not self.pool:
            fields = {"text": DRAW_ASK, "lang": "en"} if ask else {}
            return sample_item(n).to_submission(room, created_at=created_at, **fields), None
        submission, facts = self.asks[(n // DRAW_EVERY) % len(self.asks)] if ask else self.pool[n % len(self.pool)]
        fields = {"item_id": new_id(), "room": room, **({"created_at": created_at} if created_at else {})}
        return submission.model_copy(update=fields), facts


def describe(facts) -> str:
    """What a held-out picture shows, in words, to print beside the reply."""
    if facts.kind == "danmaku_screenshot":
        return f"{'dense ' if facts.dense else ''}comment wall on {facts.colour}"
    drawing = f"{facts.colour} drawing with {' and '.join(s + 's' for s in facts.shapes)}"
    return f"{drawing}, asking her to draw" if facts.draw else drawing


def with_demo_model(settings: FastTierSettings) -> FastTierSettings:
    """The fast tier runs the demo model unless the operator named a fast model.

    The demo's traffic is its own drawn pictures, so its overlay shows their thumbnails
    without an image guard unless the operator said otherwise.
    """
    update = {}
    if "model_id" not in settings.model_fields_set:
        update["model_id"] = DEMO_MODEL_ID
    if "thumbnails_without_image_guard" not in settings.model_fields_set:
        update["thumbnails_without_image_guard"] = True
    return settings.model_copy(update=update)


def build_models(settings: FastTierSettings, model_ids: list[str]) -> bool:
    """Build the missing checkpoints the registry makes here (training shows a progress bar).

    Runs before the broker and the services start, blocking: nothing else runs yet. Ctrl-C
    stops a training at once (nothing half-written is left in place); returns False then.
    """
    registry = ModelRegistry.load(settings.registry_path)
    demo = any(model_id in registry and registry.get(model_id).demo for model_id in model_ids)
    # asyncio.run's SIGINT handler would only cancel the demo once training ended.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        build_missing_checkpoints(
            registry, PROJECT_ROOT, demo=demo, persona=Persona.load(settings.persona_path), progress_bar=True
        )
    except KeyboardInterrupt:
        print("stopped while building the models", file=sys.stderr, flush=True)
        return False
    finally:
        signal.signal(signal.SIGINT, previous)
    return True


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
        self.shed: dict[str, str] = {}  # item id -> reason
        self.replays: set[str] = set()
        self.facts: dict[str, object] = {}  # item id -> what its picture shows (held-out traffic)
        self.colour_named = 0  # answers that name their picture's dominant colour
        self.welcomed_back = 0  # answers that greet a fan she remembers
        self.digests = 0  # thank-you lines to shed fans
        self.pictures = 0  # answers with a picture she drew
        self.settled = asyncio.Event()  # every item answered, shed or dead-lettered
        self.expected = 0

    def _check_settled(self) -> None:
        if self.expected and len(self.latency_ms) + len(self.dead_lettered) + len(self.shed) >= self.expected:
            self.settled.set()

    def record_shed(self, item_id: str | None, reason: str) -> None:
        if item_id in self.sent_at and item_id not in self.shed:
            self.shed[item_id] = reason
            print(f"shed ({reason}): {item_id}", flush=True)
            self._check_settled()

    def succeeded(self) -> bool:
        fresh = set(self.sent_at) - self.replays
        return fresh <= set(self.latency_ms) and all(self.shed.get(i) == "stale" for i in self.replays)

    def record_dead_letter(self, item_id: str | None) -> None:
        if item_id in self.sent_at and item_id not in self.latency_ms:
            self.dead_lettered.add(item_id)
            print(f"dead-lettered: {item_id}", flush=True)
            self._check_settled()

    def record(self, reply: dict) -> float | None:
        item_id = reply["item_id"]
        if reply.get("role") == "holding" or item_id not in self.sent_at or item_id in self.latency_ms:
            return None
        ms = (time.monotonic() - self.sent_at[item_id]) * 1000
        self.latency_ms[item_id] = ms
        self.by_tier[reply["tier"]] = self.by_tier.get(reply["tier"], 0) + 1
        self.pictures += bool(reply.get("picture"))
        facts = self.facts.get(item_id)
        if facts is not None and not facts.draw and names_colour(reply["text"], facts.colour):
            self.colour_named += 1
        self.welcomed_back += welcomes_back(reply["text"])
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
            who = f"[{reply['room']}] {reply['in_reply_to']['display_name']} <-"
            if reply.get("role") == "holding":
                print(f"{who} (holding line: {reply['route_reason']}) {reply['text']}", flush=True)
            elif reply.get("role") == "digest":
                tally.digests += 1
                print(f"[{reply['room']}] (thank-you digest) {reply['text']}", flush=True)
            elif ms is not None:
                how = reply["tier"] + (f", {reply['degraded']}" if reply.get("degraded") else "")
                facts = tally.facts.get(reply["item_id"])
                shows = f"   [picture: {describe(facts)}]" if facts is not None else ""
                drew = f" [she drew a picture, {len(reply['picture']) // 1024} KiB]" if reply.get("picture") else ""
                print(f"{who} ({reply['cue']['emotion']}, {how}, {reply['route_reason']}, {ms:.0f} ms) {reply['text']}"
                      f"{drew}{shows}", flush=True)
            # A terminal, not a bubble: acked at once, so the gateway's pacing does not apply.
            await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())


async def watch_topic(bootstrap: str, topic: str, on_record, ready: asyncio.Event) -> None:
    """Call `on_record(json)` for every new record of `topic` (dead letters, shed items)."""
    consumer = make_consumer(bootstrap, None, "idolstream-demo-watch", auto_offset_reset="latest")
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
                    on_record(orjson.loads(record.value))
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def fans_app(bootstrap: str, home: Path) -> AsyncIterator[str]:
    """`idolstream serve fans` as a child process (its log in var/logs/fans.log); its URL once ready.

    In a session of its own, like the broker: a terminal's Ctrl-C reaches the demo, which
    stops it in order (SIGTERM: it commits what it processed).
    """
    log_path = home / "logs" / "fans.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "IDOLSTREAM_FANS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.cli", "-v", "serve", "fans", env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def copy_log() -> None:
        with log_path.open("ab") as log:
            while line := await process.stdout.readline():
                log.write(line)
                log.flush()
                found = FANS_LISTENING.search(line.decode(errors="replace"))
                if found and not listening.done():
                    listening.set_result(f"http://127.0.0.1:{found.group(1)}")
        if not listening.done():
            status = await process.wait()
            listening.set_exception(IdolstreamError(f"the fans app exited (status {status}); see {log_path}"))

    copier = asyncio.create_task(copy_log())
    try:
        async with asyncio.timeout(FANS_START_S):
            url = await listening
            async with httpx.AsyncClient() as client:
                while (await client.get(f"{url}/readyz")).status_code != 200:
                    await asyncio.sleep(0.2)  # poll interval while its tables recover
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), FANS_START_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        await copier


@contextlib.asynccontextmanager
async def stopped_on_exit() -> AsyncIterator[list[asyncio.Task]]:
    """A list for the demo's own client tasks; leaving the block cancels them and waits until they end.

    Entered after the services, it is left before them, however the block ends (a signal
    included): the demo's clients stop while the gateway and the broker are still there.
    """
    tasks: list[asyncio.Task] = []
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_demo(items: int, exit_when_done: bool, rooms: int, interval_s: float, timeout_s: float) -> int:
    """Run the demo; a local broker that the demo started is stopped again at the end, after the services."""
    fast_settings = with_demo_model(FastTierSettings())
    model_ids = [fast_settings.model_id, DeepTierSettings().deep_model_id, DrawTierSettings().draw_model_id]
    if not build_models(fast_settings, model_ids):
        return 128 + signal.SIGINT
    stopped_by = _stop_on_signals(asyncio.current_task())
    broker = local_kafka(fast_settings)
    started_here = not fast_settings.kafka_bootstrap and broker.pid() is None
    print("starting the local broker (or using KAFKA_BOOTSTRAP)…", file=sys.stderr, flush=True)
    # Shielded: a signal during start-up must not leave a broker starting behind the demo's back.
    starting = asyncio.ensure_future(asyncio.to_thread(bootstrap_for, fast_settings, start_local=True))
    try:
        bootstrap = await asyncio.shield(starting)
        return await _demo(bootstrap, fast_settings, items, exit_when_done, rooms, interval_s, timeout_s)
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        return 128 + stopped_by[0]
    finally:
        if started_here:
            await asyncio.gather(starting, return_exceptions=True)  # bounded by the broker's start timeout
            if await asyncio.to_thread(broker.down):
                print("the local broker is stopped", file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _stop_on_signals(main: asyncio.Task) -> list[int]:
    """The first SIGINT/SIGTERM cancels `main`, which then unwinds in order; returns the signals seen.

    After that the default handlers are back, so a second Ctrl-C quits at once.
    """
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    def stop(signum: int) -> None:
        seen.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print("stopping: the services first, then a broker the demo started (Ctrl-C again quits at once)…",
              file=sys.stderr, flush=True)
        main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    return seen


def share_cores_between_tiers() -> None:
    """The tiers run in this one process: give each half the cores instead of letting all use all.

    Models each running on every core thrash; on their own machines (pods) each tier has its
    cores to itself and this does not apply. (The draw tier shares the half too: it draws a
    few pictures between the chat's answers.)
    """
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


async def _demo(bootstrap: str, fast_settings: FastTierSettings, items: int, exit_when_done: bool, rooms: int,
                interval_s: float, timeout_s: float) -> int:
    gateway_settings = GatewaySettings()
    if gateway_settings.overlay_secret is None:  # a secret for this run only
        gateway_settings = gateway_settings.model_copy(update={"overlay_secret": SecretStr(secrets.token_hex(32))})
    deep_settings = DeepTierSettings()
    draw_settings = DrawTierSettings()
    if "IDOLSTREAM_FAN_MEMORY" not in os.environ:  # the demo shows her remembering fans unless told not to
        fast_settings = fast_settings.model_copy(update={"fan_memory": True})
        deep_settings = deep_settings.model_copy(update={"fan_memory": True})
    await prepare_topics(fast_settings, bootstrap)
    print("loading the fast, deep and draw models…", file=sys.stderr, flush=True)
    share_cores_between_tiers()
    fast_metrics, deep_metrics, draw_metrics = WorkerMetrics("fast"), WorkerMetrics("deep"), DrawMetrics()
    fast_slot = await load_slot(fast_settings, fast_settings.model_id, fast_metrics)
    deep_slot = await load_slot(deep_settings, deep_settings.deep_model_id, deep_metrics)
    draw_slot = await load_draw_slot(draw_settings, draw_metrics)
    room_ids = [f"demo-room-{i + 1}" for i in range(rooms)]
    tally = Tally()
    tally.expected = items
    held_out = fast_slot.spec.demo
    traffic = Traffic(held_out, items)
    print("starting the fans app (likes, fan memory, thank-you digests)…", file=sys.stderr, flush=True)
    async with fans_app(bootstrap, fast_settings.home) as fans_url, \
            gateway_service(gateway_settings, bootstrap) as (gateway, _), \
            deep_tier_service(deep_settings, bootstrap, deep_slot, deep_metrics), \
            draw_tier_service(draw_settings, bootstrap, draw_slot, draw_metrics), \
            fast_tier_service(fast_settings, bootstrap, fast_slot, fast_metrics) as fast, \
            stopped_on_exit() as watchers:
        fast_task = fast.task
        base = f"http://{gateway_settings.host}:{gateway.port}"
        tokens = {room: issue_token(gateway_settings.secret(), room, 86_400) for room in room_ids}
        page = f"{base}/?{urlencode({'room': room_ids[0], 'token': tokens[room_ids[0]]})}"
        print(f"overlay page: {page}  (fast {fast_slot.model_id}, deep {deep_slot.model_id}, "
              f"draw {draw_slot.model_id}; "
              f"fans app {fans_url}/metrics)", file=sys.stderr, flush=True)
        for topic, on_record in (
            (fast_settings.topics.dlq, lambda r: tally.record_dead_letter(r.get("item_id"))),
            (fast_settings.topics.shed, lambda r: tally.record_shed(r.get("item_id"), r.get("reason", "?"))),
        ):
            ready = asyncio.Event()
            watchers.append(asyncio.create_task(watch_topic(bootstrap, topic, on_record, ready)))
            await asyncio.wait_for(ready.wait(), 10)
        for room in room_ids:
            connected = asyncio.Event()
            watchers.append(asyncio.create_task(watch_room(
                f"ws://{gateway_settings.host}:{gateway.port}/ws/{room}?token={tokens[room]}", tally, connected)))
            await asyncio.wait_for(connected.wait(), 10)
        async with SubmissionClient(bootstrap, fast_settings.topics, "idolstream-demo") as client:
            for i in range(items):
                replay = i % REPLAY_EVERY == REPLAY_EVERY - 1
                created_at = utcnow() - REPLAY_AGE if replay else None
                submission, facts = traffic.item(i, room_ids[i % rooms], created_at)
                if facts is not None:
                    tally.facts[submission.item_id] = facts
                if replay:
                    tally.replays.add(submission.item_id)
                tally.sent_at[submission.item_id] = time.monotonic()
                await client.submit(submission)
                if interval_s:
                    await asyncio.sleep(interval_s)  # the offered rate of sample traffic
            if items:
                done = asyncio.ensure_future(tally.settled.wait())
                await asyncio.wait({done, fast_task, *watchers}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
                done.cancel()
            if not exit_when_done:
                print(f"demo running: open {page} in a browser (or an OBS browser source); "
                      "Ctrl-C stops", file=sys.stderr, flush=True)
                n = items
                while not fast_task.done():  # keep the overlay alive with a trickle of sample traffic
                    await asyncio.sleep(4.0)
                    submission, facts = traffic.item(n, room_ids[n % rooms])
                    if facts is not None:
                        tally.facts[submission.item_id] = facts
                    await client.submit(submission)
                    n += 1
    models = {"fast": fast_slot.model_id, "deep": deep_slot.model_id, "draw": draw_slot.model_id}
    for slot in (fast_slot, deep_slot, draw_slot):
        slot.close()
    latencies = list(tally.latency_ms.values())
    summary = {
        "items": items,
        "replied": len(latencies),
        "dead_lettered": len(tally.dead_lettered),
        "by_tier": {tier: tally.by_tier.get(tier, 0) for tier in ("fast", "deep", "draw", "fallback")},
        "pictures": tally.pictures,
        "shed": len(tally.shed),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "models": models,
        **({"colour_named": tally.colour_named} if held_out else {}),
        "welcomed_back": tally.welcomed_back,
        "digests": tally.digests,
        "kafka_bootstrap": bootstrap,
    }
    print(orjson.dumps(summary).decode(), flush=True)
    return 0 if tally.succeeded() else 1
