"""Pictures she drew, end to end: a reply's picture (a data URL inside the reply) is shown in its
bubble by the overlay page in a real headless chromium, is replayed with the reply to an overlay
that resumes from before it (also from a restarted gateway, which rebuilt its history from Kafka),
and the gateway's room histories stay within their byte budget, pictures counted whole, when
rooms fill up with them. A 1080p screenshot is kept as build/test-artifacts/overlay-picture.png.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random

import pytest
from PIL import Image
from playwright.async_api import async_playwright

from producers.samples import picture_data_url, sample_reply
from stream.contracts import Reply
from stream.local_kafka import find_free_port
from stream.metrics import GatewayMetrics
from tests.stack import (
    WAIT_S, frames_until, gateway_settings, open_overlay, overlay_token, produce_replies, running_gateway,
)
from tests.test_overlay_page import ARTIFACTS, CHROMIUM_FLAGS, chromium_path, until_clients
from tests.test_retraction import RECORD_ADDED  # the reply id of every bubble the page ever adds, in order

pytestmark = pytest.mark.kafka

PICTURE = ".bubble img.picture"
# The bubble's picture as the browser decoded it: its natural size, the RGBA of the pixels at
# `points` (drawn onto a canvas at natural size), and where it sits against the bubble and the text.
DECODED_PICTURE = """
(img, points) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const text = document.createRange();
  text.selectNodeContents(img.parentElement.lastChild);
  const box = img.getBoundingClientRect(), bubble = img.closest(".bubble").getBoundingClientRect();
  return {
    natural: [img.naturalWidth, img.naturalHeight],
    pixels: points.map(([x, y]) => [...context.getImageData(x, y, 1, 1).data]),
    shown: [box.width, box.height],
    inside: box.left >= bubble.left && box.right <= bubble.right &&
            box.top >= bubble.top && box.bottom <= bubble.bottom,
    text_below: text.getBoundingClientRect().top >= box.bottom,
    text: img.parentElement.lastChild.textContent,
  };
}
"""

# Load an image from `url`: the directive that refused it, or "loaded" / "failed" when none did.
REFUSED_IMAGE = """
(url) => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), {once: true});
  const img = new Image();
  img.onload = () => resolve("loaded");
  img.onerror = () => setTimeout(() => resolve("failed"), 500);  // a refusal reports itself before this
  img.src = url;
})
"""


def decoded(data_url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")


def has_reply(reply: Reply):
    return lambda replies: any(r["reply_id"] == reply.reply_id for r in replies)


async def overlay_page(browser, base: str, room: str):
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    await page.add_init_script(RECORD_ADDED)
    await page.goto(f"{base}/?room={room}&token={overlay_token(room)}&show_ms=600000")
    return page


async def added_until(page, reply: Reply) -> list[str]:
    """The reply ids of the bubbles the page added, once `reply`'s is among them."""
    try:
        await page.wait_for_function("(id) => window.added.includes(id)", arg=reply.reply_id, timeout=WAIT_S * 1000)
    except Exception:
        raise AssertionError(f"the page never showed {reply.reply_id}: {await page.evaluate('window.added')}") \
            from None
    return await page.evaluate("window.added")


async def test_a_picture_she_drew_is_shown_in_its_bubble_and_replayed_on_resume(kafka_bootstrap, topic_prefix):
    room = "room-draw"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, port=find_free_port(), heartbeat_s=0.5,
                                ack_timeout_s=0)
    topic = settings.topics.replies
    base = f"http://127.0.0.1:{settings.port}"
    plain = sample_reply(room, 0)
    drawn = sample_reply(room, 1, picture=True, text="Here you are: the two of us under the stars!")
    later = sample_reply(room, 2, picture=True)
    expected = decoded(drawn.picture)
    points = [(4, 4), (128, 128), (250, 250)]  # the gradient's two ends and the star
    fetched: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            metrics = GatewayMetrics()
            async with running_gateway(settings, metrics) as gateway:
                page = await overlay_page(browser, base, room)
                page.on("request", lambda request: fetched.append(request.url))
                await until_clients(metrics, 1)
                cursors = await produce_replies(kafka_bootstrap, topic, [plain, drawn])
                assert await added_until(page, drawn) == [plain.reply_id, drawn.reply_id]

                picture = page.locator(PICTURE)
                assert await picture.count() == 1, "the drawn reply shows its picture, the plain one shows none"
                await page.wait_for_function(f"() => document.querySelector('{PICTURE}').complete",
                                             timeout=WAIT_S * 1000)
                seen = await picture.evaluate(DECODED_PICTURE, points)
                assert seen["natural"] == [256, 256], "the picture was decoded"
                for (x, y), rgba in zip(points, seen["pixels"]):
                    want = expected.getpixel((x, y))
                    assert rgba[3] == 255 and all(abs(a - b) <= 2 for a, b in zip(rgba, want)), \
                        f"pixel ({x}, {y}) is {rgba}, the picture has {want} there"
                assert seen["inside"] and 100 <= seen["shown"][0] <= 0.3 * 1080 + 1, f"sized to the bubble: {seen}"
                assert seen["text_below"] and seen["text"] == drawn.text, "her words under the picture"
                assert "emotion-" + drawn.cue.emotion in await page.locator("#avatar").get_attribute("class")
                plain_bubble = page.locator(f".bubble[data-reply-id='{plain.reply_id}']")
                assert await plain_bubble.locator("img").count() == 0
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "overlay-picture.png"), animations="disabled")
                foreign = [url for url in fetched if not url.startswith(f"{base}/")]
                assert not foreign, f"the page fetched from elsewhere: {foreign}"
                # Its Content-Security-Policy lets images come from data: URLs only, even the gateway's own.
                refused = await page.evaluate(REFUSED_IMAGE, f"{base}/picture.png")
                assert refused == "img-src", f"an image from {base} was not refused by the page's policy: {refused}"
                await page.close()

                # An overlay resuming from before it gets the reply again, picture and all.
                ws, hello = await open_overlay(gateway.port, room, overlay_token(room), after=cursors[0])
                assert (hello["resumed"], hello["complete"]) == (1, True)
                replayed = await frames_until(ws, has_reply(drawn))
                assert [r["picture"] for r in replayed] == [drawn.picture]
                await ws.close()

            # A restarted gateway rebuilt its history from Kafka, pictures included.
            metrics = GatewayMetrics()
            async with running_gateway(settings, metrics) as gateway:
                assert metrics.registry.get_sample_value("idolstream_ws_history_rebuilt_total") == 2
                ws, hello = await open_overlay(gateway.port, room, overlay_token(room), after=cursors[0])
                assert (hello["resumed"], hello["complete"]) == (1, True)
                replayed = await frames_until(ws, has_reply(drawn))
                assert [(r["reply_id"], r["picture"]) for r in replayed] == [(drawn.reply_id, drawn.picture)]
                await ws.close()

                # A fresh page resumes nothing: it shows what the room says from now on.
                fresh = await overlay_page(browser, base, room)
                fresh_ws, hello = await open_overlay(gateway.port, room, overlay_token(room))
                assert hello["resumed"] == 0
                await until_clients(metrics, 2)
                await produce_replies(kafka_bootstrap, topic, [later])
                assert [r["reply_id"] for r in await frames_until(fresh_ws, has_reply(later))] == [later.reply_id]
                assert await added_until(fresh, later) == [later.reply_id]
                await fresh.wait_for_function(f"() => document.querySelector('{PICTURE}').naturalWidth > 0",
                                              timeout=WAIT_S * 1000)
                await fresh_ws.close()
        finally:
            await browser.close()


def noise_picture(seed: int, side: int = 200) -> str:
    """A picture that does not compress (random pixels): about 160 KB of data URL for 200 x 200."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    return picture_data_url(Image.frombytes("RGB", (side, side), pixels))


def drawn_reply(room: str, n: int) -> Reply:
    reply = sample_reply(room, n)
    return Reply.model_validate(reply.model_dump() | {"picture": noise_picture(n)})


def gauge(metrics: GatewayMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0


async def received(metrics: GatewayMetrics, count: int) -> list[float]:
    """Wait until the gateway has read `count` replies; the history sizes it reported meanwhile."""
    sizes = []
    async with asyncio.timeout(WAIT_S):
        while gauge(metrics, "idolstream_ws_replies_received_total") < count:
            sizes.append(gauge(metrics, "idolstream_ws_history_bytes"))
            await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout
    return [*sizes, gauge(metrics, "idolstream_ws_history_bytes")]


async def test_histories_stay_within_their_byte_budget_as_rooms_fill_with_pictures(kafka_bootstrap, topic_prefix):
    budget = 2**20
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.5, ack_timeout_s=0, history_max_mib=1)
    topic = settings.topics.replies
    quiet = [sample_reply("room-quiet", n) for n in range(3)]
    flood = [drawn_reply("room-flood", n) for n in range(10)]
    picture_frame = len(flood[0].picture)
    metrics = GatewayMetrics()
    async with running_gateway(settings, metrics) as gateway:
        quiet_cursors = await produce_replies(kafka_bootstrap, topic, quiet)
        flood_cursors = await produce_replies(kafka_bootstrap, topic, flood)
        sizes = await received(metrics, len(quiet) + len(flood))
        assert max(sizes) <= budget, f"the histories held {max(sizes)} bytes, over the budget of {budget}"
        assert sizes[-1] >= 3 * picture_frame, f"{sizes[-1]} bytes held: the pictures are not counted whole"

        # The flooded room kept its newest pictures; the quiet room, nobody watching it, kept everything.
        ws, hello = await open_overlay(gateway.port, "room-quiet", overlay_token("room-quiet"),
                                       after=quiet_cursors[0])
        assert (hello["resumed"], hello["complete"]) == (2, True), "one room's pictures pushed another room out"
        assert [r["reply_id"] for r in await frames_until(ws, has_reply(quiet[-1]))] == \
            [r.reply_id for r in quiet[1:]]
        await ws.close()
        ws, hello = await open_overlay(gateway.port, "room-flood", overlay_token("room-flood"),
                                       after=flood_cursors[0])
        assert hello["resumed"] >= 1 and not hello["complete"]
        replayed = await frames_until(ws, has_reply(flood[-1]))
        assert [r["picture"] for r in replayed] == [r.picture for r in flood[-hello["resumed"]:]]
        await ws.close()

        # Many rooms fill up with pictures: the least recently active histories make way.
        rooms = [[drawn_reply(f"room-busy-{k}", 100 * k + n) for n in range(4)] for k in range(4)]
        await produce_replies(kafka_bootstrap, topic, [reply for room in rooms for reply in room])
        sizes = await received(metrics, len(quiet) + len(flood) + 16)
        assert max(sizes) <= budget, f"the histories held {max(sizes)} bytes, over the budget of {budget}"
        assert sizes[-1] >= budget // 2, "the budget is used, not thrown away"
