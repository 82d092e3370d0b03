"""The overlay page in a real headless chromium (Debian's, driven by Playwright by path).

Replies produced to Kafka appear as bubbles in room order; a gateway restart in the middle
of the stream resumes without a gap or a repeat; the page fetches nothing but the gateway.
A 1080p screenshot is kept under build/test-artifacts/.
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


async def test_replies_appear_as_bubbles_in_order_across_a_gateway_restart(kafka_bootstrap, topic_prefix):
    room = "room-obs"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, port=find_free_port(), heartbeat_s=0.5,
                                ack_timeout_s=5)
    topic = settings.topics.replies
    base = f"http://127.0.0.1:{settings.port}"
    fetched: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
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
                last = sample_reply(room, 9, text="Waah, you drew Mochi with a strawberry parfait? I love it!",
                                    thumbnail=True)
                await produce_replies(kafka_bootstrap, topic, [last])
                bubble = still.locator(".bubble")
                await bubble.wait_for(timeout=WAIT_S * 1000)
                assert await still.locator("body").evaluate("b => getComputedStyle(b).backgroundColor") == "rgba(0, 0, 0, 0)"
                size = await bubble.evaluate("b => parseFloat(getComputedStyle(b).fontSize)")
                assert size >= 28, f"bubble text of {size}px is too small to read at 1080p"
                assert "emotion-" + last.cue.emotion in await still.locator("#avatar").get_attribute("class")
                thumb = still.locator(".bubble img.thumb")
                assert await thumb.evaluate("img => img.complete && img.naturalWidth") == 96
                # A token for another room: the page says so and stops retrying.
                refused = await browser.new_page()
                await refused.goto(f"{base}/?room={room}&token={overlay_token('another-room')}")
                status = refused.locator("#status")
                await status.filter(has_text="refused").wait_for(timeout=WAIT_S * 1000)
                assert "wrong_room" in await status.inner_text()
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await still.screenshot(path=str(ARTIFACTS / "overlay-1080p.png"), animations="disabled",
                                       omit_background=True)
        finally:
            await browser.close()
    foreign = [url for url in fetched if not url.split("://", 1)[1].startswith(f"127.0.0.1:{settings.port}/")]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
