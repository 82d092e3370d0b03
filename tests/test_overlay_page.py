"""The overlay page in a real headless chromium (Debian's, driven by Playwright by path).

Replies produced to Kafka appear as bubbles in room order; a gateway restart in the middle
of the stream resumes without a gap or a repeat; the page fetches nothing but the gateway, and
nothing it asks the gateway for fails. Chinese and Japanese are drawn as real glyphs, by a
font the page names (never as boxes). A 1080p screenshot is kept under build/test-artifacts/.
"""

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from producers.samples import sample_reply
from stream.local_kafka import find_free_port
from stream.metrics import GatewayMetrics
from tests.chromium_netlog import failed_requests
from tests.stack import WAIT_S, gateway_settings, overlay_token, produce_replies, running_gateway

pytestmark = pytest.mark.kafka
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
CHROMIUM_FLAGS = [  # no sandbox as root; no background calls to a network this machine may not have
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
# Every bubble the page adds, as the audience would see it appear.
RECORD_BUBBLES = """
window.bubbles = [];
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes)
    if (node.classList && node.classList.contains("bubble"))
      window.bubbles.push({cursor: node.dataset.cursor, item: node.dataset.itemId, role: node.dataset.role,
                           text: node.innerText});
}).observe(document, {childList: true, subtree: true});
"""
# The CJK fonts the page's font stack must name, by the system an OBS machine runs.
CJK_FONTS = {
    "Windows": {"Microsoft YaHei", "Yu Gothic", "Meiryo"},
    "macOS": {"PingFang SC", "Hiragino Sans"},
    "Linux": {"Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei"},
}
# Each distinct Chinese or Japanese character of an element, drawn alone in the element's font
# (the same font fallback as the page's text): its pixels. A missing glyph draws the same box
# for every character, so boxes give identical pixels where real glyphs differ.
CJK_GLYPH_PIXELS = """
(element) => {
  const style = getComputedStyle(element);
  const font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const size = Math.ceil(parseFloat(style.fontSize) * 1.5);
  const chars = new Set(element.textContent.match(/[\\p{Script=Han}\\p{Script=Hiragana}\\p{Script=Katakana}]/gu));
  return [...chars].map((char) => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    const context = canvas.getContext("2d");
    context.font = font;
    context.textBaseline = "top";
    context.fillText(char, 0, 0);
    const alpha = context.getImageData(0, 0, size, size).data.filter((_, i) => i % 4 === 3);
    return [char, alpha.join(",")];
  });
}
"""


def chromium_path() -> str:
    path = os.environ.get("IDOLSTREAM_CHROMIUM") or shutil.which("chromium")
    assert path, "no chromium: `make setup` installs Debian's chromium package (or set IDOLSTREAM_CHROMIUM)"
    return path


async def until_clients(metrics: GatewayMetrics, n: int) -> None:
    async with asyncio.timeout(WAIT_S):
        while metrics.registry.get_sample_value("idolstream_ws_clients") != n:
            await asyncio.sleep(0.05)


async def bubbles_until(page, count: int) -> list[dict]:
    await page.wait_for_function(f"window.bubbles.length >= {count}", timeout=WAIT_S * 1000)
    return await page.evaluate("window.bubbles")


async def fonts_drawing(page, selector: str) -> set[str]:
    """The families chromium drew the element's own text with (DevTools' platform fonts)."""
    devtools = await page.context.new_cdp_session(page)
    await devtools.send("DOM.enable")
    await devtools.send("CSS.enable")
    root = (await devtools.send("DOM.getDocument"))["root"]["nodeId"]
    node = (await devtools.send("DOM.querySelector", {"nodeId": root, "selector": selector}))["nodeId"]
    fonts = (await devtools.send("CSS.getPlatformFontsForNode", {"nodeId": node}))["fonts"]
    await devtools.detach()
    return {font["familyName"] for font in fonts}


async def assert_cjk_drawn_as_glyphs(page, selector: str) -> None:
    glyphs = await page.locator(selector).evaluate(CJK_GLYPH_PIXELS)
    chars = "".join(char for char, _ in glyphs)
    assert len(chars) >= 8, f"too few distinct CJK characters to compare: {chars!r}"
    drawn_alike = len(glyphs) - len({pixels for _, pixels in glyphs})
    assert drawn_alike == 0, f"CJK characters {chars} are drawn alike (boxes): no CJK font was found"
    stack = await page.locator(selector).evaluate("e => getComputedStyle(e).fontFamily")
    named = {family.strip().strip('"') for family in stack.split(",")}
    missing = {system: fonts - named for system, fonts in CJK_FONTS.items() if fonts - named}
    assert not missing, f"the font stack {stack} lacks these CJK fonts: {missing}"
    used = await fonts_drawing(page, selector)
    assert used & named & CJK_FONTS["Linux"], f"the CJK text was drawn with {used}, not with a CJK font the page names"


async def test_replies_appear_as_bubbles_in_order_across_a_gateway_restart(kafka_bootstrap, topic_prefix, tmp_path):
    room = "room-obs"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, port=find_free_port(), heartbeat_s=0.5,
                                ack_timeout_s=5)
    topic = settings.topics.replies
    base = f"http://127.0.0.1:{settings.port}"
    fetched: list[str] = []
    netlog = tmp_path / "chromium-net.json"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(),
                                                   args=[*CHROMIUM_FLAGS, f"--log-net-log={netlog}"])
        try:
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            page.on("request", lambda request: fetched.append(request.url))
            page.on("websocket", lambda ws: fetched.append(ws.url))
            await page.add_init_script(RECORD_BUBBLES)

            metrics = GatewayMetrics()
            async with running_gateway(settings, metrics):
                await page.goto(f"{base}/?room={room}&token={overlay_token(room)}&show_ms=400&holding_ms=100")
                await until_clients(metrics, 1)
                first = [sample_reply(room, 0), sample_reply(room, 1),
                         sample_reply(room, 2, role="holding", item_id="asked"),
                         sample_reply(room, 3, item_id="asked", text="Twelve plus sixty is seventy-two!"),
                         sample_reply(room, 4)]
                cursors = await produce_replies(kafka_bootstrap, topic, first)
                shown = await bubbles_until(page, 5)
                assert [b["cursor"] for b in shown] == cursors
                assert [(b["item"], b["role"]) for b in shown[2:4]] == [("asked", "holding"), ("asked", "answer")]
                assert "Fan 0" in shown[0]["text"] and first[0].text in shown[0]["text"]
                cursors += await produce_replies(kafka_bootstrap, topic, [sample_reply(room, 5)])
                await bubbles_until(page, 6)
            # The gateway is down: the room keeps talking, the page keeps retrying.
            cursors += await produce_replies(kafka_bootstrap, topic, [sample_reply(room, n) for n in (6, 7)])
            metrics = GatewayMetrics()
            async with running_gateway(settings, metrics):
                await until_clients(metrics, 1)
                cursors += await produce_replies(kafka_bootstrap, topic, [sample_reply(room, 8)])
                shown = await bubbles_until(page, 9)
                assert [b["cursor"] for b in shown] == cursors, "in order, nothing lost, nothing shown twice"
                assert metrics.registry.get_sample_value("idolstream_ws_resumes_total", {"complete": "true"}) == 1

                # A page that keeps its bubble up, for a look at 1080p.
                still = await browser.new_page(viewport={"width": 1920, "height": 1080})
                await still.goto(f"{base}/?room={room}&token={overlay_token(room)}&show_ms=600000")
                await until_clients(metrics, 2)
                # A reply mixing Chinese, Japanese and English, to a fan with a Chinese-Japanese name.
                last = sample_reply(room, 9, thumbnail=True,
                                    text="Waah, Mochi和草莓芭菲！太可爱了～ いちごパフェ、最高です！ I love it!")
                last = last.model_copy(update={"in_reply_to": last.in_reply_to.model_copy(
                    update={"display_name": "小雪ゆき"})})
                await produce_replies(kafka_bootstrap, topic, [last])
                bubble = still.locator(".bubble")
                await bubble.wait_for(timeout=WAIT_S * 1000)
                assert await still.locator("body").evaluate("b => getComputedStyle(b).backgroundColor") == "rgba(0, 0, 0, 0)"
                size = await bubble.evaluate("b => parseFloat(getComputedStyle(b).fontSize)")
                assert size >= 28, f"bubble text of {size}px is too small to read at 1080p"
                assert "emotion-" + last.cue.emotion in await still.locator("#avatar").get_attribute("class")
                assert await bubble.inner_text() == "小雪ゆき\n" + last.text
                thumb = still.locator(".bubble img.thumb")
                assert await thumb.evaluate("img => img.complete && img.naturalWidth") == 96
                ARTIFACTS.mkdir(parents=True, exist_ok=True)  # kept before the font checks: it shows their failure
                await still.screenshot(path=str(ARTIFACTS / "overlay-1080p.png"), animations="disabled",
                                       omit_background=True)
                await assert_cjk_drawn_as_glyphs(still, ".bubble > div")
                # A token for another room: the page says so and stops retrying.
                refused = await browser.new_page()
                await refused.goto(f"{base}/?room={room}&token={overlay_token('another-room')}")
                status = refused.locator("#status")
                await status.filter(has_text="refused").wait_for(timeout=WAIT_S * 1000)
                assert "wrong_room" in await status.inner_text()
        finally:
            await browser.close()
    foreign = [url for url in fetched if not url.split("://", 1)[1].startswith(f"127.0.0.1:{settings.port}/")]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
    # Websocket attempts (ws://) are left out: failing while the gateway is down is the page's
    # retry path, checked above by the resume.
    failed = failed_requests(netlog, f"{base}/")
    assert not failed, f"requests of the page that failed: {failed}"
