"""Retraction, end to end: a reply taken back leaves every overlay and is never replayed.

A Retraction on `replies.retracted` (the fans app's, for reports past the room's threshold,
or an operator's from the console) takes exactly that bubble off a page in a real headless
chromium; an overlay that resumes from before it, a fresh page and a restarted gateway
never get it again; a reply whose retraction came first is never shown; a record there
that is not a retraction is counted and the gateway goes on serving.
"""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from playwright.async_api import async_playwright

from consumers.console import RecentReplies, console_service
from producers.samples import sample_reply
from stream.contracts import Reply, Retraction, new_id, utcnow
from stream.kafka_io import make_producer
from stream.local_kafka import find_free_port
from stream.metrics import ConsoleMetrics, GatewayMetrics
from tests.stack import (
    WAIT_S, gateway_settings, open_overlay, overlay_token, produce_replies, read_topic, running_gateway,
)
from tests.test_console import console_settings, operator
from tests.test_overlay_page import ARTIFACTS, CHROMIUM_FLAGS, chromium_path, until_clients

pytestmark = pytest.mark.kafka

# The reply id of every bubble the page ever adds, in order: what the audience saw appear.
RECORD_ADDED = """
window.added = [];
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes)
    if (node.classList && node.classList.contains("bubble")) window.added.push(node.dataset.replyId);
}).observe(document, {childList: true, subtree: true});
"""
BUBBLE_IDS = "() => [...document.querySelectorAll('.bubble')].map((b) => b.dataset.replyId)"


def retraction_of(reply: Reply, reason: str = "reports", **fields) -> Retraction:
    return Retraction(retraction_id=new_id(), reply_id=reply.reply_id, room=reply.room, item_id=reply.item_id,
                      reason=reason, reports=fields.pop("reports", 5 if reason == "reports" else 0), at=utcnow(),
                      **fields)


async def produce_raw(bootstrap: str, topic: str, key: str, values: list[bytes]) -> None:
    producer = make_producer(bootstrap, "test-retractions")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def produce_retractions(bootstrap: str, topic: str, retractions: list[Retraction]) -> None:
    for retraction in retractions:
        await produce_raw(bootstrap, topic, retraction.room, [retraction.to_json()])


def sample(metrics: GatewayMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0


async def until_metric(metrics: GatewayMetrics, name: str, value: float, **labels) -> None:
    async with asyncio.timeout(WAIT_S):
        while sample(metrics, name, **labels) < value:
            await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout


async def page_shows(page, reply_ids: list[str]) -> None:
    """Wait until the page's bubbles are exactly these replies, in this order."""
    try:
        await page.wait_for_function(f"(want) => JSON.stringify(({BUBBLE_IDS})()) === JSON.stringify(want)",
                                     arg=reply_ids, timeout=WAIT_S * 1000)
    except Exception:
        raise AssertionError(f"the page shows {await page.evaluate(BUBBLE_IDS)}, not {reply_ids}") from None


async def frames_until(ws, done, timeout: float = WAIT_S) -> list[dict]:
    """Reply and retract frames (heartbeats skipped, replies acked at once) until `done(frames)` holds."""
    frames: list[dict] = []
    async with asyncio.timeout(timeout):
        while not done(frames):
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "heartbeat":
                continue
            frames.append(frame)
            if frame["type"] == "reply":
                await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())
    return frames


def has_reply(reply: Reply):
    return lambda frames: any(f["type"] == "reply" and f["reply"]["reply_id"] == reply.reply_id for f in frames)


def reply_ids(frames: list[dict]) -> list[str]:
    return [f["reply"]["reply_id"] for f in frames if f["type"] == "reply"]


async def launch(playwright):
    return await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)


async def overlay_page(browser, base: str, room: str):
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    await page.add_init_script(RECORD_ADDED)
    await page.goto(f"{base}/?room={room}&token={overlay_token(room)}&show_ms=600000")
    return page


async def test_a_retraction_takes_exactly_its_bubble_off_the_page_and_nothing_replays_it(kafka_bootstrap,
                                                                                       topic_prefix):
    room = "room-ret"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, port=find_free_port(), heartbeat_s=0.5,
                                ack_timeout_s=0)
    topics = settings.topics
    base = f"http://127.0.0.1:{settings.port}"
    said = [sample_reply(room, n) for n in range(3)]
    bad = said[1]
    later, last = sample_reply(room, 3), sample_reply(room, 4)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            metrics = GatewayMetrics()
            async with running_gateway(settings, metrics) as gateway:
                page = await overlay_page(browser, base, room)
                await until_clients(metrics, 1)
                cursors = await produce_replies(kafka_bootstrap, topics.replies, said)
                await page_shows(page, [r.reply_id for r in said])

                await produce_retractions(kafka_bootstrap, topics.replies_retracted, [retraction_of(bad)])
                await page_shows(page, [said[0].reply_id, said[2].reply_id])
                assert sample(metrics, "idolstream_gateway_retractions_total", reason="reports") == 1
                assert "emotion-" + said[2].cue.emotion in await page.locator("#avatar").get_attribute("class")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "overlay-after-retraction.png"), animations="disabled")

                # An overlay resuming from before it: told it was retracted, never sent it.
                ws, hello = await open_overlay(gateway.port, room, overlay_token(room), after=cursors[0])
                assert (hello["resumed"], hello["complete"]) == (1, True)
                frames = await frames_until(ws, has_reply(said[2]))
                assert frames[0] == {"type": "retract", "reply_id": bad.reply_id, "room": room}
                assert reply_ids(frames) == [said[2].reply_id]
                await ws.close()

                fresh = await overlay_page(browser, base, room)
                await until_clients(metrics, 2)
                await produce_replies(kafka_bootstrap, topics.replies, [later])
                await page_shows(fresh, [later.reply_id])
                await page_shows(page, [said[0].reply_id, said[2].reply_id, later.reply_id])

            # The gateway restarts: it reads the retraction back with the replies of its window.
            metrics = GatewayMetrics()
            async with running_gateway(settings, metrics) as gateway:
                assert sample(metrics, "idolstream_gateway_retractions_total", reason="reports") == 1
                assert sample(metrics, "idolstream_ws_history_rebuilt_total") == 4
                ws, hello = await open_overlay(gateway.port, room, overlay_token(room), after=cursors[0])
                assert (hello["resumed"], hello["complete"]) == (2, True)
                frames = await frames_until(ws, has_reply(later))
                assert frames[0]["type"] == "retract" and frames[0]["reply_id"] == bad.reply_id
                assert reply_ids(frames) == [said[2].reply_id, later.reply_id]
                await ws.close()
                await until_clients(metrics, 2)  # both pages are back
                await produce_replies(kafka_bootstrap, topics.replies, [last])
                await page_shows(fresh, [later.reply_id, last.reply_id])
                await page_shows(page, [said[2].reply_id, later.reply_id, last.reply_id])
            assert await page.evaluate("window.added") == [r.reply_id for r in (*said, later, last)], \
                "the retracted reply appeared once, before it was retracted, and never again"
            assert await fresh.evaluate("window.added") == [later.reply_id, last.reply_id]
        finally:
            await browser.close()


async def test_a_reply_whose_retraction_came_first_is_never_shown(kafka_bootstrap, topic_prefix):
    room = "room-early"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.5, ack_timeout_s=0)
    topics = settings.topics
    early, after = sample_reply(room, 0), sample_reply(room, 1)
    metrics = GatewayMetrics()
    async with running_gateway(settings, metrics) as gateway, async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            await produce_retractions(kafka_bootstrap, topics.replies_retracted, [retraction_of(early, "operator",
                                                                                                operator="Rin")])
            await until_metric(metrics, "idolstream_gateway_retractions_total", 1, reason="operator")
            # Both connect after the retraction: nobody told them of it, only the gateway can keep it off.
            page = await overlay_page(browser, f"http://127.0.0.1:{gateway.port}", room)
            ws, _ = await open_overlay(gateway.port, room, overlay_token(room))
            await until_clients(metrics, 2)
            await produce_replies(kafka_bootstrap, topics.replies, [early, after])  # one partition: in this order
            frames = await frames_until(ws, has_reply(after))
            assert reply_ids(frames) == [after.reply_id]
            await page_shows(page, [after.reply_id])
            assert await page.evaluate("window.added") == [after.reply_id]
            assert sample(metrics, "idolstream_ws_replies_received_total") == 2, "it was read, and kept off"
            await ws.close()
        finally:
            await browser.close()


async def test_an_operator_retracts_a_reply_from_the_console_and_its_bubble_goes(kafka_bootstrap, topic_prefix):
    room = "room-op"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.5, ack_timeout_s=0)
    topics = settings.topics
    kept, bad = sample_reply(room, 0), sample_reply(room, 1, text="Something she should never have said.")
    metrics, console_metrics = GatewayMetrics(), ConsoleMetrics()
    async with running_gateway(settings, metrics) as gateway, \
            console_service(console_settings(kafka_bootstrap, topic_prefix), kafka_bootstrap,
                            console_metrics) as (_, console_port), \
            async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            overlay = await overlay_page(browser, f"http://127.0.0.1:{gateway.port}", room)
            await until_clients(metrics, 1)
            await produce_replies(kafka_bootstrap, topics.replies, [kept, bad])
            await page_shows(overlay, [kept.reply_id, bad.reply_id])

            console = await browser.new_page(viewport={"width": 1440, "height": 900})
            await console.goto(f"http://127.0.0.1:{console_port}/#token={operator('Rin')}")
            await console.wait_for_selector("#operator:text('Rin')", timeout=WAIT_S * 1000)
            await console.click("nav button[data-tab=onair]")
            row = console.locator(f'tr[data-reply-id="{bad.reply_id}"]')
            await row.wait_for(timeout=WAIT_S * 1000)
            await console.locator(f'tr[data-reply-id="{kept.reply_id}"]').wait_for(timeout=WAIT_S * 1000)
            await row.get_by_role("button", name="Retract").click()
            await console.locator(f'tr.retracted[data-reply-id="{bad.reply_id}"]').wait_for(timeout=WAIT_S * 1000)
            assert "retracted (Rin)" in await row.inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await console.screenshot(path=str(ARTIFACTS / "console-on-air.png"), full_page=True)

            await page_shows(overlay, [kept.reply_id])
            assert sample(metrics, "idolstream_gateway_retractions_total", reason="operator") == 1
            assert console_metrics.retractions._value.get() == 1
        finally:
            await browser.close()

        [record] = await read_topic(kafka_bootstrap, topics.replies_retracted, lambda r: len(r) >= 1)
        assert (record["reply_id"], record["room"], record["item_id"]) == (bad.reply_id, room, bad.item_id)
        assert (record["reason"], record["operator"], record["schema_version"]) == ("operator", "Rin", 1)

        headers = {"Authorization": f"Bearer {operator('Rin')}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{console_port}", timeout=10, headers=headers) as http:
            again = await http.post(f"/api/retract/{bad.reply_id}", json={"room": room})
            assert again.status_code == 409 and again.json()["error"] == "retracted_already"
            elsewhere = await http.post(f"/api/retract/{kept.reply_id}", json={"room": "room-other"})
            assert elsewhere.status_code == 400 and room in elsewhere.json()["detail"]
            no_room = await http.post(f"/api/retract/{kept.reply_id}", json={"item_id": kept.item_id})
            assert no_room.status_code == 400 and no_room.json()["error"] == "bad_request"
            bad_id = await http.post("/api/retract/not%20an%20id", json={"room": room})
            assert bad_id.status_code == 400 and "reply_id" in bad_id.json()["detail"]
            as_room = await http.post(f"/api/retract/{kept.reply_id}", json={"room": room},
                                      headers={"Authorization": f"Bearer {overlay_token(room)}"})
            assert as_room.status_code == 401
            listed = (await http.get("/api/replies")).json()["replies"]
        assert [(r["reply_id"], r["retracted"] and r["retracted"]["operator"]) for r in listed] == [
            (bad.reply_id, "Rin"), (kept.reply_id, None)]
        assert console_metrics.retractions._value.get() == 1, "refused requests retract nothing"


async def test_a_record_on_the_retractions_topic_that_is_no_retraction_is_counted_and_the_gateway_goes_on(
        kafka_bootstrap, topic_prefix):
    room = "room-garbage"
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.5, ack_timeout_s=0)
    topics = settings.topics
    metrics = GatewayMetrics()
    async with running_gateway(settings, metrics) as gateway:
        ws, _ = await open_overlay(gateway.port, room, overlay_token(room))
        await produce_raw(kafka_bootstrap, topics.replies_retracted, room, [
            b"\x00\xff not JSON at all",
            orjson.dumps({"schema_version": 1, "reply_id": "r1", "room": room}),  # no reason, no id, no time
            orjson.dumps({**orjson.loads(retraction_of(sample_reply(room, 9)).to_json()), "schema_version": 2}),
        ])
        await until_metric(metrics, "idolstream_gateway_invalid_retractions_total", 3)

        reply = sample_reply(room, 0)
        await produce_replies(kafka_bootstrap, topics.replies, [reply])
        assert reply_ids(await frames_until(ws, has_reply(reply))) == [reply.reply_id]
        await produce_retractions(kafka_bootstrap, topics.replies_retracted, [retraction_of(reply)])
        frames = await frames_until(ws, lambda fs: any(f["type"] == "retract" for f in fs))
        assert frames == [{"type": "retract", "reply_id": reply.reply_id, "room": room}]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{gateway.port}/readyz")).status_code == 200
        assert sample(metrics, "idolstream_gateway_invalid_retractions_total") == 3
        assert sample(metrics, "idolstream_gateway_retractions_total", reason="reports") == 1
        await ws.close()


def test_the_consoles_recent_replies_are_bounded_newest_first_and_know_a_retraction_that_came_first():
    recent = RecentReplies(capacity=2)
    replies = [sample_reply("room-a", n) for n in range(3)]
    recent.retracted(retraction_of(replies[2], "operator", operator="Aki"))  # before its reply
    for reply in replies:
        recent.said(reply)
    listed = recent.listing()
    assert [r["reply_id"] for r in listed] == [replies[2].reply_id, replies[1].reply_id]
    assert listed[0]["retracted"]["operator"] == "Aki" and listed[1]["retracted"] is None
    assert recent.get(replies[0].reply_id) is None, "the oldest made way"
    recent.retracted(retraction_of(replies[2]))
    assert recent.retraction(replies[2].reply_id).reason == "operator", "the first retraction is the one kept"
