"""The operator console, in a real headless chromium, on the real services.

A fan item the word filter holds for review is answered by the fast tier, but its reply
waits on `replies.held`: the overlay does not show it. An operator signs in to the
console with an operator token, edits the held reply and approves it: only then does it
reach the overlay, with the edited text, and the decision (who, before, after) is on
`review.decisions`. A rejected one never reaches the overlay. A room token opens nothing
in the console. The playground answers an uploaded picture stage by stage.
"""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image
from playwright.async_api import async_playwright

from consumers.console import console_service
from consumers.services import prepare_topics
from producers.samples import sample_reply
from stream.contracts import HeldReply, ModerationRecord, new_id, utcnow
from stream.learning.replies import names_colour
from stream.kafka_io import make_producer
from stream.metrics import ConsoleMetrics
from stream.reasons import ModerationAction, ModerationSide, ModerationStage
from stream.settings import ConsoleSettings
from stream.tokens import issue_operator_token
from tests.chromium_netlog import failed_requests
from tests.stack import WAIT_S, answers, frames_until, overlay_token, read_topic, running_stack, scrape, total
from tests.test_overlay_page import ARTIFACTS, CHROMIUM_FLAGS, assert_cjk_drawn_as_glyphs, chromium_path

pytestmark = pytest.mark.kafka

CONSOLE_SECRET = "console-secret-for-tests-only-0123456789"
WORRIED = "我真的不想活了，画了这个"  # self_harm is a review category of the shipped list


def console_settings(bootstrap: str, prefix: str, **overrides) -> ConsoleSettings:
    return ConsoleSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=2, console_port=0,
                           console_secret=CONSOLE_SECRET, **overrides)


def operator(name: str = "Rin") -> str:
    return issue_operator_token(CONSOLE_SECRET.encode(), name, 600)


async def test_a_held_reply_reaches_the_overlay_only_after_an_operator_approves_it_in_the_console(
    kafka_bootstrap, topic_prefix, fast_runner, tmp_path
):
    netlog = tmp_path / "chromium-net.json"
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner) as stack:
        overlay = await stack.overlay("room-c")
        held = await stack.submit("room-c", seed=1, text=WORRIED, user_id="worried", display_name="小雨")
        doubt = await stack.submit("room-c", seed=2, text="I want to die of cuteness", user_id="doubt")
        clean = await stack.submit("room-c", seed=3, text="hello!", user_id="clean")
        before = await frames_until(overlay, lambda r: any(a["item_id"] == clean.item_id for a in answers(r)))
        assert {a["item_id"] for a in answers(before)} == {clean.item_id}  # the held ones are not shown

        metrics = ConsoleMetrics()
        async with console_service(console_settings(kafka_bootstrap, topic_prefix), kafka_bootstrap,
                                   metrics) as (console, port):
            base = f"http://127.0.0.1:{port}"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium_path(),
                                                           args=[*CHROMIUM_FLAGS, f"--log-net-log={netlog}"])
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 900})
                    await page.goto(f"{base}/#token={operator()}")
                    await page.wait_for_selector("#operator:text('Rin')", timeout=WAIT_S * 1000)
                    card = page.locator(f".card[data-reply-id] >> text={WORRIED}")
                    await card.wait_for(timeout=WAIT_S * 1000)
                    scraped = await scrape(f"{base}/metrics")
                    assert total(scraped, "idolstream_review_pending") == 2
                    # The fan's Chinese is legible to the reviewer, not boxes.
                    await assert_cjk_drawn_as_glyphs(page, f'.card[data-item-id="{held.item_id}"] .fan-text')
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=ARTIFACTS / "console-review.png", full_page=True)

                    held_card = page.locator(".card", has_text=WORRIED)
                    edited = "Mochi and I are right here with you. Thank you for the drawing!"
                    await held_card.locator("textarea").fill(edited)
                    await held_card.get_by_role("button", name="Approve").click()
                    await held_card.wait_for(state="detached", timeout=WAIT_S * 1000)
                    shown = await frames_until(overlay, lambda r: any(a["item_id"] == held.item_id for a in r))
                    [approved] = [a for a in shown if a["item_id"] == held.item_id]
                    assert approved["text"] == edited

                    doubt_card = page.locator(".card", has_text="I want to die of cuteness")
                    await doubt_card.get_by_role("button", name="Reject").click()
                    await doubt_card.wait_for(state="detached", timeout=WAIT_S * 1000)
                    await page.wait_for_selector("#queue-status:text('Nothing is waiting')", timeout=WAIT_S * 1000)
                finally:
                    await browser.close()
            decisions = await read_topic(kafka_bootstrap, stack.fast.topics.review_decisions, lambda r: len(r) >= 2)
            late = await stack.submit("room-c", seed=4, text="one more", user_id="late")
            after = await frames_until(overlay, lambda r: any(a["item_id"] == late.item_id for a in r))
            assert doubt.item_id not in {a["item_id"] for a in after}  # rejected: never shown
            assert metrics.review_decisions.labels("approve")._value.get() == 1

    by_item = {d["item_id"]: d for d in decisions}
    approve, reject = by_item[held.item_id], by_item[doubt.item_id]
    assert (approve["operator"], approve["decision"], approve["edited"]) == ("Rin", "approve", True)
    assert approve["after"] == edited and approve["before"] != edited
    assert (reject["decision"], reject["after"]) == ("reject", None)
    assert failed_requests(netlog, base) == []  # the page asks the console for nothing it lacks


async def test_the_console_api_refuses_anything_but_an_operator_token(kafka_bootstrap, topic_prefix):
    settings = console_settings(kafka_bootstrap, topic_prefix)
    async with console_service(settings, kafka_bootstrap) as (console, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            room_token = overlay_token("room-c")
            for headers in ({}, {"Authorization": f"Bearer {room_token}"}, {"Authorization": "Bearer nonsense"}):
                refused = await http.get("/api/queue", headers=headers)
                assert refused.status_code == 401, headers
            ok = await http.get("/api/queue", headers={"Authorization": f"Bearer {operator()}"})
            assert ok.status_code == 200 and ok.json()["waiting"] == []
            missing = await http.post("/api/review/nope", json={"decision": "approve"},
                                      headers={"Authorization": f"Bearer {operator()}"})
            assert missing.status_code == 404
            page = await http.get("/")
            assert page.status_code == 200 and "idolstream console" in page.text
            async with asyncio.timeout(WAIT_S):  # the queue is read back, and the reader keeps following
                while (await http.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.1)  # polling a condition, bounded by the timeout
            await asyncio.sleep(0)  # one more turn of the reader's loop: it must still be reading
            assert not console.reading.done(), console.reading


async def test_a_picture_she_drew_held_for_review_is_shown_to_the_reviewer_and_goes_out_with_it_approved(
    kafka_bootstrap, topic_prefix
):
    settings = console_settings(kafka_bootstrap, topic_prefix)
    await prepare_topics(settings, kafka_bootstrap)
    drawn = sample_reply("room-drawn", 5, picture=True, text="Ta-da! I drew this just for you!")
    doubt = ModerationRecord(
        record_id=new_id(), item_id=drawn.item_id, reply_id=drawn.reply_id, room=drawn.room, user=drawn.in_reply_to,
        side=ModerationSide.REPLY, stage=ModerationStage.IMAGE_GUARD, action=ModerationAction.REVIEW,
        categories=["Controversial"], detail="her picture", at=utcnow(),
    )
    held = HeldReply(reply=drawn, why=[doubt], fan_text="draw me with my cat!", held_at=utcnow())
    producer = make_producer(kafka_bootstrap, "test-held")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.replies_held, held.to_json(), key=drawn.room.encode())
    finally:
        await producer.stop()
    async with console_service(settings, kafka_bootstrap) as (_, port):
        base = f"http://127.0.0.1:{port}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 900})
                await page.goto(f"{base}/#token={operator()}")
                card = page.locator(f'.card[data-reply-id="{drawn.reply_id}"]')
                await card.wait_for(timeout=WAIT_S * 1000)
                shown = card.locator("img.drawn")
                await page.wait_for_function("(id) => document.querySelector(`.card[data-reply-id='${id}'] "
                                             "img.drawn`)?.naturalWidth > 0", arg=drawn.reply_id,
                                             timeout=WAIT_S * 1000)
                assert await shown.get_attribute("src") == drawn.picture  # what the guard doubted, decoded
                await card.get_by_role("button", name="Approve").click()
                await card.wait_for(state="detached", timeout=WAIT_S * 1000)
            finally:
                await browser.close()
    [approved] = await read_topic(kafka_bootstrap, settings.topics.replies, lambda r: len(r) >= 1)
    assert (approved["reply_id"], approved["picture"]) == (drawn.reply_id, drawn.picture)


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), colour).save(buf, format="PNG")
    return buf.getvalue()


# The first test to ask for the demo model trains it when var/ lacks it (minutes, once).
@pytest.mark.timeout(900)
async def test_the_playground_answers_an_upload_stage_by_stage(kafka_bootstrap, topic_prefix, demo_checkpoint):
    settings = console_settings(kafka_bootstrap, topic_prefix, playground_model_id="demo-qwen3vl")
    headers = {"Authorization": f"Bearer {operator()}"}
    async with console_service(settings, kafka_bootstrap) as (console, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=headers) as http:
            files = {"image": ("red.png", _png((220, 30, 30)), "image/png")}
            answer = (await http.post("/api/playground", files=files, data={"name": "Aki", "text": "look!"})).json()
            blocked = (await http.post("/api/playground", files=files,
                                       data={"name": "Aki", "text": "you i.d.i.o.t"})).json()
            not_a_picture = await http.post("/api/playground", files={"image": ("x.png", b"nope", "image/png")})
    assert answer["model_id"] == "demo-qwen3vl" and not answer["blocked"]
    assert names_colour(answer["reply"]["text"], "red"), answer  # the trained demo model sees the picture
    assert [(s["side"], s["stage"], s["action"]) for s in answer["stages"]] == [
        ("fan", "word_filter", "allow"), ("reply", "word_filter", "allow")]
    assert blocked["blocked"] and blocked["reply"] is None
    assert blocked["stages"][0]["action"] == "block" and blocked["stages"][0]["categories"] == ["insult"]
    assert not_a_picture.status_code == 400


async def test_the_console_lists_the_tiers_models_and_switches_one(kafka_bootstrap, topic_prefix, registry,
                                                                    tiny_checkpoints):
    from consumers.model_slot import ModelSlot
    from stream.metrics import WorkerMetrics
    from stream.models.backends import load_runner
    from stream.switching import ModelSwitchGate
    from tests.conftest import PROJECT_ROOT

    first = load_runner(registry.get("tiny-qwen3vl-moe"), PROJECT_ROOT)
    slot = ModelSlot(first, lambda model_id: load_runner(registry.get(model_id), PROJECT_ROOT), registry.ids,
                     ModelSwitchGate(min_interval_s=0), WorkerMetrics("fast"))
    try:
        async with running_stack(kafka_bootstrap, topic_prefix, first, fast_slot=slot, admin_port=0) as stack:
            admin = f"http://127.0.0.1:{stack.fast_worker.admin_port}"
            settings = console_settings(kafka_bootstrap, topic_prefix, tier_admins=f"fast={admin}")
            async with console_service(settings, kafka_bootstrap) as (console, port):
                headers = {"Authorization": f"Bearer {operator()}"}
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers) as http:
                    listed = (await http.get("/api/models")).json()
                    assert listed["tiers"]["fast"]["model"] == "tiny-qwen3vl-moe"
                    switched = await http.post("/api/switch", json={"tier": "fast", "model_id": "tiny-qwen3vl-dense"})
                    assert switched.status_code == 202, switched.text
                    async with asyncio.timeout(WAIT_S):
                        while (await http.get("/api/models")).json()["tiers"]["fast"].get("model") != "tiny-qwen3vl-dense":
                            await asyncio.sleep(0.1)  # polling a condition, bounded by the timeout
                    unknown = await http.post("/api/switch", json={"tier": "nowhere", "model_id": "x"})
                    assert unknown.status_code == 404
    finally:
        slot.close()
