"""Drawing requests through the fast tier, on real parts: a fan's "draw me..." gets her line at
once and her picture from the draw tier after it, shown in its bubble by the overlay page in a
real headless chromium and replayed to an overlay that resumes; with the draw tier down the
fan gets her apology from the fast tier once, and its breaker stops handing drawings over.

A 1080p screenshot is kept as build/test-artifacts/overlay-drawn.png.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson
import pytest
from playwright.async_api import async_playwright

from consumers.model_slot import ModelSlot
from consumers.services import draw_tier_service, prepare_topics
from stream.contracts import decode_draw_request
from stream.draw.runner import DrawRunner
from stream.metrics import DrawMetrics
from stream.persona import Persona
from stream.settings import DrawTierSettings
from tests.stack import WAIT_S, frames_until, open_overlay, overlay_token, read_topic, running_stack
from tests.test_overlay_page import ARTIFACTS, CHROMIUM_FLAGS, chromium_path
from tests.test_overlay_pictures import DECODED_PICTURE, PICTURE, decoded

pytestmark = pytest.mark.kafka

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PERSONA = Persona.load(PROJECT_ROOT / "config" / "persona.json")
ASK = "Draw me with my cat!"
# The page's websocket, watched: true once the gateway said hello (the page is listening).
HELLO_SEEN = """
window.helloSeen = false;
const PageSocket = window.WebSocket;
window.WebSocket = class extends PageSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      try { if (JSON.parse(event.data).type === "hello") window.helloSeen = true; } catch (e) {}
    });
  }
};
"""


@contextlib.asynccontextmanager
async def running_draw_tier(bootstrap: str, prefix: str, registry, **overrides):
    """The draw tier on the project's tiny Qwen-Image pipeline, in this process."""
    settings = DrawTierSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, draw_group_id=f"{prefix}draw",
                                topic_partitions=2, session_timeout_ms=6000, **overrides)
    runner = DrawRunner(registry.get(settings.draw_model_id), PROJECT_ROOT)
    await prepare_topics(settings, bootstrap)
    metrics = DrawMetrics()
    try:
        async with draw_tier_service(settings, bootstrap, ModelSlot.around(runner, metrics), metrics):
            yield metrics
    finally:
        runner.close()


def answered(item_id: str):
    return lambda replies: any(r["item_id"] == item_id and r["role"] == "answer" for r in replies)


async def test_a_drawing_request_gets_her_line_then_her_picture_in_the_browser_and_again_on_resume(
    kafka_bootstrap, topic_prefix, registry, tiny_checkpoints, fast_runner
):
    room = "room-draw-me"
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner) as stack, \
            running_draw_tier(kafka_bootstrap, topic_prefix, registry) as draw_metrics, \
            async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await page.add_init_script(HELLO_SEEN)
            await page.goto(f"http://127.0.0.1:{stack.gateway_port}/?room={room}&token={overlay_token(room)}"
                            "&show_ms=600000")
            await page.wait_for_function("window.helloSeen", timeout=WAIT_S * 1000)
            ws = await stack.overlay(room)
            item = await stack.submit(room, 0, text=ASK, lang="en")

            frames = await frames_until(ws, answered(item.item_id))
            holding, picture = [f for f in frames if f["item_id"] == item.item_id]
            # Her line at once, from the fast tier, in her own words for drawing.
            assert (holding["role"], holding["tier"], holding["route_reason"]) == ("holding", "fast", "draw_request")
            assert holding["text"] in PERSONA.lines["en"].drawing
            # Then the picture, from the draw tier, with her line about it.
            assert (picture["role"], picture["tier"], picture["route_reason"]) == ("answer", "draw", "draw_request")
            assert picture["degraded"] is None and picture["text"] in PERSONA.lines["en"].drawn
            spec = registry.get("tiny-qwen-image").draw
            assert decoded(picture["picture"]).size == (spec.width, spec.height)

            # What the draw tier was asked: the fan's request, in her style, for this item.
            [request] = await read_topic(kafka_bootstrap, stack.fast.topics.items_draw, lambda got: got,
                                         decode=lambda record: decode_draw_request(record.value))
            assert request.item.item_id == item.item_id and request.mode == "text_to_image"
            assert "a fan with their cat" in request.prompt and request.holding_sent
            assert stack.metrics.registry.get_sample_value(
                "idolstream_draw_requests_total", {"reason": "draw_request", "mode": "text_to_image"}) == 1
            assert draw_metrics.registry.get_sample_value(
                "idolstream_draw_pictures_total", {"mode": "text_to_image", "outcome": "drawn"}) == 1

            # The page showed her line, then the picture in its bubble, decoded.
            await page.wait_for_function(f"() => document.querySelector('{PICTURE}')?.naturalWidth > 0",
                                         timeout=WAIT_S * 1000)
            seen = await page.locator(PICTURE).evaluate(DECODED_PICTURE, [(spec.width // 2, spec.height // 2)])
            assert seen["natural"] == [spec.width, spec.height] and seen["inside"], seen
            assert seen["text"] == picture["text"]
            expected = decoded(picture["picture"]).getpixel((spec.width // 2, spec.height // 2))
            assert all(abs(a - b) <= 2 for a, b in zip(seen["pixels"][0], expected)), (seen["pixels"], expected)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "overlay-drawn.png"), animations="disabled")

            # An overlay that had seen her line and comes back gets the picture again.
            ws2, hello = await open_overlay(stack.gateway_port, room, overlay_token(room),
                                            after=_cursor_of(frames, holding))
            assert hello["resumed"] == 1
            [again] = await frames_until(ws2, answered(item.item_id))
            assert (again["reply_id"], again["picture"]) == (picture["reply_id"], picture["picture"])
            await ws2.close()
        finally:
            await browser.close()


def _cursor_of(frames: list[dict], reply: dict) -> str:
    [raw] = [f["_raw"] for f in frames if f["reply_id"] == reply["reply_id"]]
    return orjson.loads(raw)["cursor"]


async def test_with_the_draw_tier_down_she_apologises_once_and_the_breaker_stops_handing_drawings_over(
    kafka_bootstrap, topic_prefix, registry, tiny_checkpoints, fast_runner
):
    room = "room-draw-down"
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner, draw_deadline_ms=1000, draw_grace_ms=0,
                             breaker_failures=1, breaker_open_s=600) as stack:
        ws = await stack.overlay(room)
        first = await stack.submit(room, 0, text=ASK, lang="en")
        frames = await frames_until(ws, answered(first.item_id))
        holding, sorry = frames
        assert holding["role"] == "holding" and holding["text"] in PERSONA.lines["en"].drawing
        # Nobody drew it: past the deadline the fast tier says sorry itself.
        assert (sorry["role"], sorry["tier"], sorry["degraded"]) == ("answer", "fallback", "draw_deadline")
        assert sorry["text"] in PERSONA.lines["en"].draw_sorry

        # The breaker is open: the next request is not handed over, and she says sorry at once.
        second = await stack.submit(room, 1, text="画一个我和你一起看星星", lang="zh")
        [now] = await frames_until(ws, answered(second.item_id))
        assert (now["role"], now["degraded"], now["route_reason"]) == ("answer", "draw_unavailable", "draw_request")
        assert now["text"] in PERSONA.lines["zh"].draw_sorry
        assert stack.metrics.registry.get_sample_value("idolstream_draw_breaker_open") == 1

        # The draw tier comes back and answers the first request late (its own apology): the overlay
        # still shows one answer per item. A later plain item in the room proves nothing came between.
        async with running_draw_tier(kafka_bootstrap, topic_prefix, registry):
            replies = await read_topic(
                kafka_bootstrap, stack.fast.topics.replies,
                lambda got: any(r["item_id"] == first.item_id and r["tier"] == "draw" for r in got),
            )
            late = [r for r in replies if r["item_id"] == first.item_id and r["tier"] == "draw"]
            assert [r["degraded"] for r in late] == ["draw_deadline"]
            plain = await stack.submit(room, 2, text="I drew this for you!", lang="en")
            after = await frames_until(ws, answered(plain.item_id))
            assert [f["item_id"] for f in after] == [plain.item_id]
        requests = await read_topic(kafka_bootstrap, stack.fast.topics.items_draw, lambda got: got,
                                    decode=lambda record: decode_draw_request(record.value))
        assert [r.item.item_id for r in requests] == [first.item_id]


async def test_the_demo_models_idea_for_the_picture_follows_the_fans_picture(
    kafka_bootstrap, topic_prefix, demo_runner
):
    """The image prompt carries what the fast model saw: its idea names the colour of the fan's picture."""
    from producers.training_data import held_out_draw_requests
    from stream.learning.replies import names_colour

    asks = held_out_draw_requests(6, seed=11, room="room-draw-idea")
    async with running_stack(kafka_bootstrap, topic_prefix, demo_runner) as stack:
        for submission, _ in asks:
            await stack.client.submit(submission)
        wanted = {s.item_id for s, _ in asks}
        requests = await read_topic(
            kafka_bootstrap, stack.fast.topics.items_draw, lambda got: wanted <= {r.item.item_id for r in got},
            decode=lambda record: decode_draw_request(record.value),
        )
    by_item = {r.item.item_id: r for r in requests}
    named = 0
    for submission, facts in asks:
        request = by_item[submission.item_id]
        assert request.reason == "draw_request" and request.language == facts.lang
        idea = request.prompt.partition("Her idea for it: ")[2] or request.prompt.partition("她的构思：")[2]
        named += bool(idea) and names_colour(idea, facts.colour)
    # The model is tiny and the pictures are held out: most, not all (5 of 6 when measured).
    assert named >= 4, [(r.prompt[-120:], f.colour) for (s, f) in asks for r in [by_item[s.item_id]]]


def test_a_regular_who_asked_for_a_drawing_last_time_is_not_drawn_for_again(demo_runner):
    """Her memory of a fan holds what they wrote last time; an old request in it is not a request now."""
    from datetime import timedelta

    from producers.training_data import MEMORY_NOW, held_out_submissions
    from stream.fans.profiles import FanProfile, describe
    from stream.images import ImageLimits, admit_image, decode_base64_image
    from stream.models.runtime import GenerationRequest
    from stream.persona import build_messages, read_reply

    limits = ImageLimits(max_pixels=demo_runner.spec.max_pixels)
    requests = []
    for submission, facts in held_out_submissions(16, seed=13):
        profile = FanProfile(
            room="r", user_id="u", display_name=facts.name, first_seen=MEMORY_NOW - timedelta(hours=5),
            last_seen=MEMORY_NOW - timedelta(minutes=5), items_sent=2, last_item_id="earlier",
            last_sent_kind="fan_image", last_sent_text=ASK, last_reply_text="Ta-da! I drew this just for you!",
        )
        memory = describe(profile, "now", MEMORY_NOW, PERSONA.fan_memory, facts.name)
        assert "asked you for a picture" in memory and ASK not in memory  # remembered, not quoted
        image = admit_image(decode_base64_image(submission.image.data), limits).image
        requests.append(GenerationRequest(build_messages(PERSONA, submission, "fast", None, memory), [image]))
    answers = [result.text for start in range(0, len(requests), 8)
               for result in demo_runner.generate(requests[start:start + 8])]
    tagged = [text for text in answers if read_reply(text, PERSONA, "item").wants_draw]
    # 16 of 24 were tagged when her memory quoted the old request.
    assert len(tagged) <= 1, tagged
