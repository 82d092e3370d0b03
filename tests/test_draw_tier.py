"""The draw tier on the real broker: drawing requests in, pictures (or her apology) out.

The tiny Qwen-Image pipeline draws noise-like pictures at toy sizes in well under a second
per picture on a CPU; what is checked is what a fan (or the overlay) would notice.
"""

from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: nothing may come from the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import asyncio
import base64
import contextlib
import io
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import httpx

import numpy as np
import pytest
from PIL import Image, ImageDraw

from consumers.model_slot import ModelSlot
from consumers.services import draw_tier_service, load_draw_runner, load_draw_slot, prepare_topics
from producers.client import build_submission
from stream.contracts import DrawRequest, HeldReply, Source, Timings, new_id, utcnow
from stream.draw.runner import DrawRunner, encode_picture, img2img_strength, outpaint_canvas, request_seed
from stream.draw.tiny import build_tiny_controlnet, build_tiny_draw_pipeline
from stream.kafka_io import make_producer
from stream.metrics import DrawMetrics
from stream.models.backends import load_runner
from stream.models.errors import ModelLoadError
from stream.models.registry import ModelRegistry
from stream.models.runtime import GenerationResult
from stream.moderation.guard import ImageGuard
from stream.moderation.review import ReviewQueue
from stream.reasons import RouteReason
from stream.settings import DrawTierSettings
from stream.switching import ModelSwitchGate
from tests.processes import service_env, start_service, stop
from tests.stack import WAIT_S, as_json, read_topic

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 64, 48
DRAW = {"steps": 2, "width": WIDTH, "height": HEIGHT, "deadline_ms": 30_000}
BASE = {"architecture": "dense", "tier": "draw", "dtype": "float32", "tiny": False}


@pytest.fixture(scope="module")
def draw_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of draw entries over one tiny pipeline: a quick one, one with a deadline it cannot meet,
    one with a ControlNet, one without, and one whose source is not a pipeline."""
    root = tmp_path_factory.mktemp("draw-project")
    build_tiny_draw_pipeline(root / "var" / "models" / "tiny-qwen-image")
    build_tiny_controlnet(root / "var" / "models" / "tiny-qwen-image-controlnet")
    (root / "var" / "models" / "broken").mkdir()
    (root / "var" / "models" / "broken" / "model_index.json").write_text("{not json", encoding="utf-8")
    # Absolute: the services resolve relative sources against the working directory.
    source = str(root / "var" / "models" / "tiny-qwen-image")
    controlnet = str(root / "var" / "models" / "tiny-qwen-image-controlnet")
    models = [
        {"id": "quick", "source": source, "draw": {**DRAW, "controlnet": controlnet}},
        {"id": "no-controlnet", "source": source, "draw": DRAW},
        # 200 steps cannot finish in 0.1 s: the step callback stops the pipeline.
        {"id": "slow", "source": source, "draw": {**DRAW, "steps": 200, "deadline_ms": 100}},
        {"id": "broken", "source": str(root / "var" / "models" / "broken"), "draw": DRAW},
    ]
    path = root / "config" / "models.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"models": [BASE | m for m in models]}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runners(draw_registry: Path) -> dict[str, DrawRunner]:
    registry = ModelRegistry.load(draw_registry)
    return {model_id: DrawRunner(registry.get(model_id), registry.project_root)
            for model_id in ("quick", "no-controlnet", "slow")}


def fan_png(width: int = 48, height: int = 40, seed: int = 0) -> bytes:
    """A fan's picture no decoder reproduces by chance: every pixel random."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def draw_request(room: str, mode: str = "text_to_image", *, deadline_s: float = 60.0, picture: bytes | None = None,
                 prompt: str = "draw me with my cat under the stars", created_at: datetime | None = None,
                 request_id: str | None = None) -> DrawRequest:
    item = build_submission(room=room, user_id="fan1", display_name="Hoshi", image_bytes=picture or fan_png(),
                            mime="image/png", text="draw me with my cat!", lang="en", created_at=created_at)
    now = utcnow()
    return DrawRequest(
        request_id=request_id or new_id(), item=item, prompt=prompt, mode=mode, reason=RouteReason.DRAW_REQUEST,
        language="en",
        requested_at=now, deadline_at=now + timedelta(seconds=deadline_s), holding_sent=True,
        fast_timings=Timings(item_created_at=item.created_at, queue_ms=0.0, admission_ms=1.0, inference_ms=5.0,
                             replied_at=now),
        source=Source(topic="fan.images", partition=0, offset=0, key=room),
    )


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = make_producer(bootstrap, "test-draw")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def send(bootstrap: str, settings: DrawTierSettings, *requests: DrawRequest) -> None:
    await produce(bootstrap, settings.topics.items_draw, [(r.item.room, r.to_json()) for r in requests])


def tier_settings(bootstrap: str, prefix: str, registry_path: Path, model_id: str, **overrides) -> DrawTierSettings:
    return DrawTierSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, draw_group_id=f"{prefix}draw", topic_partitions=2,
        session_timeout_ms=6000, registry_path=registry_path, draw_model_id=model_id, **overrides,
    )


@contextlib.asynccontextmanager
async def running_draw_tier(bootstrap: str, prefix: str, registry_path: Path, runner: DrawRunner,
                            image_guard: ImageGuard | None = None, **overrides):
    settings = tier_settings(bootstrap, prefix, registry_path, runner.spec.id, **overrides)
    await prepare_topics(settings, bootstrap)
    metrics = DrawMetrics()
    async with draw_tier_service(settings, bootstrap, ModelSlot.around(runner, metrics), metrics, image_guard):
        yield settings, metrics


async def replies_for(bootstrap: str, settings: DrawTierSettings, *requests: DrawRequest,
                      timeout: float = 60) -> dict[str, list[dict]]:
    """Every reply on the topic, grouped by item, once each request has at least one."""
    wanted = {r.item.item_id for r in requests}
    records = await read_topic(bootstrap, settings.topics.replies,
                               lambda got: wanted <= {r["item_id"] for r in got}, timeout=timeout)
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(record["item_id"], []).append(record)
    return grouped


def picture_of(reply: dict) -> Image.Image:
    head, data = reply["picture"].split(",", 1)
    assert head == "data:image/webp;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


async def test_a_drawing_request_gets_one_reply_with_a_picture_of_the_entrys_size(
    kafka_bootstrap, topic_prefix, draw_registry, runners
):
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"]) as (settings, metrics):
        request = draw_request("room-t2i")
        await send(kafka_bootstrap, settings, request)
        replies = (await replies_for(kafka_bootstrap, settings, request))[request.item.item_id]

    assert len(replies) == 1
    reply = replies[0]
    assert (reply["tier"], reply["role"], reply["degraded"], reply["model_id"]) == ("draw", "answer", None, "quick")
    assert reply["route_reason"] == "draw_request"
    assert picture_of(reply).size == (WIDTH, HEIGHT)
    assert reply["text"] and reply["in_reply_to"]["id"] == "fan1"
    assert metrics.pictures.labels("text_to_image", "drawn")._value.get() == 1
    assert metrics.draw_steps._value.get() == DRAW["steps"]


async def test_outpainting_keeps_the_fans_pixels_and_draws_around_them(
    kafka_bootstrap, topic_prefix, draw_registry, runners
):
    fan = fan_png(seed=3)  # admitted as it is: no side under the tiers' 32-pixel minimum
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"]) as (settings, _):
        request = draw_request("room-outpaint", "outpaint", picture=fan)
        await send(kafka_bootstrap, settings, request)
        reply = (await replies_for(kafka_bootstrap, settings, request))[request.item.item_id][0]

    assert reply["degraded"] is None
    drawn = pixels(picture_of(reply))
    canvas, mask, (left, top, right, bottom) = outpaint_canvas(Image.open(io.BytesIO(fan)), WIDTH, HEIGHT)
    keep = np.asarray(mask) == 0
    assert drawn.shape == (HEIGHT, WIDTH, 3)
    assert keep.sum() == (right - left) * (bottom - top) > 0
    # Her picture is the fan's, pixel for pixel, where the fan's picture was placed...
    assert np.array_equal(drawn[keep], pixels(canvas)[keep])
    # ...and drawn (not the canvas's stretched border) around it.
    assert not np.array_equal(drawn[~keep], pixels(canvas)[~keep])


async def test_past_the_deadline_the_fan_gets_the_apology_once(kafka_bootstrap, topic_prefix, draw_registry, runners):
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["slow"]) as (settings, metrics):
        already_late = draw_request("room-late", deadline_s=-1.0)
        too_slow = draw_request("room-late")  # the entry allows 0.1 s for 200 steps
        await send(kafka_bootstrap, settings, already_late, too_slow)
        first = await replies_for(kafka_bootstrap, settings, already_late, too_slow)
        # A later request on the same room's partition: once it is answered, nothing more comes for the first two.
        after = draw_request("room-late", deadline_s=-1.0)
        await send(kafka_bootstrap, settings, after)
        replies = await replies_for(kafka_bootstrap, settings, after)

    for request in (already_late, too_slow):
        answers = replies[request.item.item_id]
        assert len(answers) == 1, answers
        assert answers[0]["degraded"] == "draw_deadline"
        assert answers[0]["picture"] is None
        assert answers[0]["tier"] == "draw" and answers[0]["cue"]["emotion"] == "sad"
    assert first[too_slow.item.item_id] == replies[too_slow.item.item_id]
    assert metrics.pictures.labels("text_to_image", "late")._value.get() == 3
    # The slow one was stopped by the deadline, far short of its 200 steps.
    assert 0 < metrics.draw_steps._value.get() < 200


class FlagsTheFirstPicture:
    """An image guard whose verdicts the test fixes: the first picture it sees is unsafe, the rest safe."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.seen = 0
        self.sizes: list[tuple[int, int]] = []

    def generate(self, requests, options=None):
        out = []
        for request in requests:
            self.seen += 1
            self.sizes.append(request.images[0].size)
            unsafe = self.seen == 1
            text = "Safety: Unsafe\nCategories: Violent" if unsafe else "Safety: Safe\nCategories: None"
            out.append(GenerationResult(text, 10, 6, "stop"))
        return out

    def close(self) -> None:
        pass


async def test_a_picture_the_image_guard_flags_never_goes_out(kafka_bootstrap, topic_prefix, draw_registry, runners):
    project = ModelRegistry.load(PROJECT_ROOT / "config" / "models.json")
    # An image budget smaller than the pictures: the guard is shown them scaled into it.
    spec = project.get("tiny-qwen3vl-imageguard").model_copy(update={"max_pixels": 2048, "min_pixels": 1024})
    judge = FlagsTheFirstPicture(spec)
    guard = ImageGuard(judge)
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"], guard) as (
        settings, metrics
    ):
        flagged, passed = draw_request("room-guard"), draw_request("room-guard")
        await send(kafka_bootstrap, settings, flagged, passed)
        replies = await replies_for(kafka_bootstrap, settings, flagged, passed)
        [record] = await read_topic(kafka_bootstrap, settings.topics.moderation, lambda got: len(got) >= 1)

    (apology,) = replies[flagged.item.item_id]
    assert (apology["picture"], apology["degraded"], apology["tier"]) == (None, "moderation_blocked", "draw")
    assert (record["item_id"], record["side"], record["stage"], record["action"]) == (
        flagged.item.item_id, "reply", "image_guard", "block")
    assert "Violent" in record["categories"]
    (shown,) = replies[passed.item.item_id]
    assert shown["picture"] is not None and shown["degraded"] is None
    assert metrics.pictures.labels("text_to_image", "flagged")._value.get() == 1
    assert metrics.moderation_verdicts.labels("reply", "image_guard", "block")._value.get() == 1  # counted once
    assert judge.sizes == [(52, 39), (52, 39)]  # 64x48 within 2048 pixels, its shape kept


async def test_a_picture_the_image_guard_doubts_is_held_for_an_operator_with_its_picture(
    kafka_bootstrap, topic_prefix, draw_registry, runners, registry, tiny_checkpoints
):
    # The project's tiny image guard (random weights, greedy): its verdict on a given picture is fixed.
    # A fixed request id draws a fixed picture, so the test knows that verdict before the tier asks.
    doubted = draw_request("room-held", request_id="held-for-review-1")
    guard = ImageGuard(load_runner(registry.get("tiny-qwen3vl-imageguard"), PROJECT_ROOT))
    try:
        [verdict] = guard.judge([runners["quick"].draw(doubted).image])
        assert verdict.safety in ("controversial", "unparseable"), verdict  # the two a policy can send to review
        async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"], guard,
                                     guard_controversial="review", guard_unparseable="review",
                                     max_age_s=600) as (settings, metrics):  # made before the guard loaded
            # Answered without a picture (already late), after the doubted one on the room's partition.
            after = draw_request("room-held", deadline_s=-1.0)
            await send(kafka_bootstrap, settings, doubted, after)
            replies = await replies_for(kafka_bootstrap, settings, after)
            [held] = await read_topic(kafka_bootstrap, settings.topics.replies_held, lambda got: len(got) >= 1)
            [record] = await read_topic(kafka_bootstrap, settings.topics.moderation, lambda got: len(got) >= 1)
    finally:
        guard.runner.close()

    assert doubted.item.item_id not in replies  # neither her picture nor an apology reached the overlay
    reply = held["reply"]
    assert (reply["item_id"], reply["tier"], reply["degraded"]) == (doubted.item.item_id, "draw", None)
    assert picture_of(reply).size == (WIDTH, HEIGHT)
    assert held["picture"].startswith("data:image/jpeg;base64,")  # what the fan sent, for the reviewer
    assert held["fan_text"] == doubted.item.text
    assert [(w["side"], w["stage"], w["action"]) for w in held["why"]] == [("reply", "image_guard", "review")]
    assert (record["item_id"], record["action"], record["reply_id"]) == (doubted.item.item_id, "review",
                                                                        reply["reply_id"])
    assert verdict.safety in record["categories"]
    assert metrics.pictures.labels("text_to_image", "flagged")._value.get() == 1
    assert metrics.replies_held._value.get() == 1
    assert metrics.moderation_verdicts.labels("reply", "image_guard", "review")._value.get() == 1
    # An operator approves it as it is: the reply that goes out carries her picture.
    queue = ReviewQueue()
    assert queue.held(HeldReply.model_validate_json(json.dumps(held)))
    approved = queue.decide(reply["reply_id"], "op", "approve", utcnow()).reply
    assert approved.picture == reply["picture"] and approved.text == reply["text"]


async def test_a_failing_pipeline_gets_the_apology_and_the_next_request_is_drawn(
    kafka_bootstrap, topic_prefix, draw_registry, runners
):
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["no-controlnet"]) as (
        settings, metrics
    ):
        fails = draw_request("room-fail", "pose")  # this entry names no ControlNet: the pose pipeline cannot run
        drawn = draw_request("room-fail")
        await send(kafka_bootstrap, settings, fails, drawn)
        replies = await replies_for(kafka_bootstrap, settings, fails, drawn)

    (apology,) = replies[fails.item.item_id]
    assert (apology["degraded"], apology["picture"]) == ("draw_failed", None)
    (picture,) = replies[drawn.item.item_id]
    assert picture["degraded"] is None and picture_of(picture).size == (WIDTH, HEIGHT)
    assert metrics.pictures.labels("pose", "failed")._value.get() == 1


async def test_a_fans_picture_too_large_to_draw_from_gets_the_apology_and_a_dead_letter_and_the_tier_goes_on(
    kafka_bootstrap, topic_prefix, draw_registry, runners
):
    big = fan_png(160, 160, seed=5)  # random pixels: about 77 kB as a PNG
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"],
                                 max_image_bytes=20_000) as (settings, metrics):
        too_large = draw_request("room-big", "outpaint", picture=big)
        drawn = draw_request("room-big", "outpaint")
        await send(kafka_bootstrap, settings, too_large, drawn)
        replies = await replies_for(kafka_bootstrap, settings, too_large, drawn)
        [letter] = await read_topic(kafka_bootstrap, settings.topics.dlq, lambda got: len(got) >= 1)

    assert len(big) > 20_000
    (apology,) = replies[too_large.item.item_id]
    assert (apology["degraded"], apology["picture"], apology["cue"]["emotion"]) == ("draw_failed", None, "sad")
    assert (letter["reason"], letter["item_id"], letter["room"]) == ("image_too_large", too_large.item.item_id,
                                                                    "room-big")
    assert letter["source"]["topic"] == settings.topics.items_draw
    (picture,) = replies[drawn.item.item_id]
    assert picture["degraded"] is None and picture_of(picture).size == (WIDTH, HEIGHT)
    assert metrics.dead_letters.labels("image_too_large")._value.get() == 1


async def test_a_request_older_than_the_max_age_is_not_drawn_a_promised_fan_hears_sorry_the_others_are_shed(
    kafka_bootstrap, topic_prefix, draw_registry, runners
):
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"],
                                 max_age_s=30) as (settings, metrics):
        # Their deadlines are still ahead, but the fans sent their pictures two minutes ago.
        two_minutes_ago = utcnow() - timedelta(minutes=2)
        promised = draw_request("room-stale", created_at=two_minutes_ago, deadline_s=300)
        stale = draw_request("room-stale", created_at=two_minutes_ago, deadline_s=300)
        stale = stale.model_copy(update={"holding_sent": False})  # no "let me draw that" went out for it
        fresh = draw_request("room-stale")
        await send(kafka_bootstrap, settings, promised, stale, fresh)
        replies = await replies_for(kafka_bootstrap, settings, promised, fresh)
        [shed] = await read_topic(kafka_bootstrap, settings.topics.shed, lambda got: len(got) >= 1)

    [sorry] = replies[promised.item.item_id]  # her apology, at once and once
    assert (sorry["degraded"], sorry["picture"]) == ("draw_deadline", None)
    assert stale.item.item_id not in replies  # no picture and no apology
    assert (shed["item_id"], shed["reason"], shed["room"]) == (stale.item.item_id, "stale", "room-stale")
    assert shed["age_ms"] >= 120_000 and shed["source"]["topic"] == settings.topics.items_draw
    assert replies[fresh.item.item_id][0]["picture"] is not None
    assert metrics.shed.labels("stale")._value.get() == 1
    assert metrics.pictures.labels("text_to_image", "drawn")._value.get() == 1
    assert metrics.pictures.labels("text_to_image", "late")._value.get() == 1


async def test_while_the_admin_switches_the_draw_model_a_request_gets_draw_unavailable_then_the_new_model_draws(
    kafka_bootstrap, topic_prefix, draw_registry
):
    settings = tier_settings(kafka_bootstrap, topic_prefix, draw_registry, "quick", draw_admin_port=0,
                             min_switch_interval_s=0)
    await prepare_topics(settings, kafka_bootstrap)
    metrics = DrawMetrics()
    loading = threading.Event()  # the new model's load waits for it: the switch stays in progress meanwhile

    def load_when_let(model_id: str) -> DrawRunner:
        loading.wait(WAIT_S)
        return load_draw_runner(settings, model_id)

    # A runner of its own: the switch closes it.
    slot = ModelSlot(load_draw_runner(settings, "quick"), load_when_let,
                     lambda: [spec.id for spec in ModelRegistry.load(draw_registry)], ModelSwitchGate(0), metrics)
    try:
        async with draw_tier_service(settings, kafka_bootstrap, slot, metrics) as worker:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.admin_port}", timeout=10) as http:
                switching = await http.post("/switch_model", json={"model_id": "no-controlnet"})
                assert switching.status_code == 202, switching.text
                assert (await http.get("/model")).json()["loaded"] is False
                during = draw_request("room-switch")
                await send(kafka_bootstrap, settings, during)
                first = await replies_for(kafka_bootstrap, settings, during)
                loading.set()
                async with asyncio.timeout(WAIT_S):
                    while (await http.get("/model")).json() != {"model": "no-controlnet", "loaded": True,
                                                                "switching_to": None, "last_error": None}:
                        await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout
                after = draw_request("room-switch")
                await send(kafka_bootstrap, settings, after)
                replies = await replies_for(kafka_bootstrap, settings, after)
    finally:
        loading.set()
        slot.close()

    (unavailable,) = first[during.item.item_id]
    assert (unavailable["degraded"], unavailable["picture"], unavailable["tier"]) == ("draw_unavailable", None, "draw")
    assert unavailable["cue"]["emotion"] == "sad"
    (drawn,) = replies[after.item.item_id]
    assert (drawn["model_id"], drawn["degraded"]) == ("no-controlnet", None)
    assert picture_of(drawn).size == (WIDTH, HEIGHT)
    assert replies[during.item.item_id] == [unavailable]  # told once, not drawn later
    assert metrics.pictures.labels("text_to_image", "failed")._value.get() == 1


def test_a_registry_entry_whose_source_is_broken_fails_to_load_saying_which(draw_registry):
    settings = DrawTierSettings(registry_path=draw_registry)
    with pytest.raises(ModelLoadError, match="draw model 'broken' could not be loaded"):
        load_draw_runner(settings, "broken")


async def test_the_draw_tier_switches_between_draw_entries_only(draw_registry):
    metrics = DrawMetrics()
    settings = DrawTierSettings(registry_path=draw_registry, draw_model_id="quick", min_switch_interval_s=0)
    slot = await load_draw_slot(settings, metrics)
    try:
        assert sorted(slot.known_ids()) == ["broken", "no-controlnet", "quick", "slow"]
        await slot.request_switch("no-controlnet")
        assert slot.model_id == "no-controlnet" and slot.runner.spec.draw.controlnet is None
        await slot.request_switch("broken")  # cannot load: the tier goes back to the one it had
        assert slot.model_id == "no-controlnet" and slot.runner is not None
        assert "could not be loaded" in slot.last_error
    finally:
        slot.close()


async def test_garbage_and_bad_requests_on_items_draw_are_dead_lettered_and_the_tier_goes_on(
    kafka_bootstrap, topic_prefix, draw_registry, runners
):
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_registry, runners["quick"]) as (settings, _):
        good = draw_request("room-dlq")
        bad = json.loads(draw_request("room-dlq").to_json())
        bad["mode"] = "sculpt"
        await produce(kafka_bootstrap, settings.topics.items_draw, [
            ("room-dlq", b"\xff not json"), ("room-dlq", json.dumps(bad).encode()), ("room-dlq", good.to_json()),
        ])
        letters = await read_topic(kafka_bootstrap, settings.topics.dlq, lambda got: len(got) >= 2, decode=as_json)
        replies = await replies_for(kafka_bootstrap, settings, good)

    assert sorted(letter["reason"] for letter in letters) == ["invalid_json", "schema_violation"]
    assert all(letter["source"]["topic"] == settings.topics.items_draw for letter in letters)
    assert replies[good.item.item_id][0]["picture"] is not None


async def test_serve_draw_tier_draws_the_projects_tiny_pipeline_and_stops_cleanly(
    kafka_bootstrap, topic_prefix, tiny_checkpoints, tmp_path
):
    settings = DrawTierSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2)
    await prepare_topics(settings, kafka_bootstrap)
    # Sent before the process starts: on a busy machine its start may take longer than the default max age.
    request = draw_request("room-serve", "outpaint", deadline_s=300)
    await send(kafka_bootstrap, settings, request)
    env = service_env(kafka_bootstrap, topic_prefix, draw_group_id=f"{topic_prefix}draw", max_age_s="300")
    process = start_service("draw-tier", env, tmp_path / "draw.log")
    try:
        # A process start loads the pipeline (about 10 s on two CPU cores) before it joins the group.
        replies = await replies_for(kafka_bootstrap, settings, request, timeout=180)
    finally:
        code = stop(process)

    (reply,) = replies[request.item.item_id]
    entry = ModelRegistry.load(PROJECT_ROOT / "config" / "models.json").get("tiny-qwen-image").draw
    assert (reply["model_id"], reply["degraded"]) == ("tiny-qwen-image", None)
    assert picture_of(reply).size == (entry.width, entry.height)
    assert code == 0, (tmp_path / "draw.log").read_text()


def test_the_same_request_draws_the_same_picture(runners):
    request = draw_request("room-seed")
    first = runners["quick"].draw(request)
    again = runners["quick"].draw(request)
    other = runners["quick"].draw(request.model_copy(update={"request_id": new_id()}))

    assert request_seed(request.request_id) == request_seed(request.request_id)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert not np.array_equal(pixels(first.image), pixels(other.image))
    assert (first.steps_done, first.steps_planned, first.interrupted) == (DRAW["steps"], DRAW["steps"], False)


def sketch(shape: str) -> Image.Image:
    """A fan's sketch: white strokes on black, as a pose or an outline."""
    picture = Image.new("RGB", (48, 40), "black")
    pen = ImageDraw.Draw(picture)
    if shape == "stroke":
        pen.line([(4, 4), (44, 36)], fill="white", width=4)
    else:
        pen.ellipse([10, 6, 38, 34], outline="white", width=4)
    return picture


def test_pose_and_img2img_draw_from_the_fans_picture(runners):
    quick = runners["quick"]
    one, two = sketch("stroke"), sketch("ring")
    for mode in ("pose", "img2img"):
        request = draw_request("room-modes", mode)
        first, second = quick.draw(request, one), quick.draw(request, two)
        assert first.image.size == (WIDTH, HEIGHT)
        assert first.steps_done >= 1
        assert not np.array_equal(pixels(first.image), pixels(second.image)), mode


@pytest.mark.parametrize("steps", [2, 3, 4, 7, 30, 50])
@pytest.mark.parametrize("wanted", [0.01, 0.5, 0.7, 1.0])
def test_img2img_always_runs_a_step_and_always_starts_from_the_fans_picture(steps, wanted):
    strength, runs = img2img_strength(wanted, steps)
    skipped = int(max(steps - min(steps * strength, steps), 0))  # as the pipeline counts them
    assert 1 <= runs == steps - skipped <= steps - 1


def test_a_big_picture_is_squeezed_into_the_replies_limit():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    url = encode_picture(noise, 40_000)
    assert len(url) <= 40_000 and url.startswith("data:image/webp;base64,")
    with pytest.raises(ValueError, match="does not fit"):
        encode_picture(noise, 100)
