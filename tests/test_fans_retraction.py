"""Fans' reports take a reply off the air: the fans app retracts it past the room's threshold, and the bubble goes.

Real parts end to end: the fans app process counts reports from `feedback`, its
Retraction reaches the gateway, and a page in headless chromium loses exactly that bubble;
a page opened afterwards never shows it.
"""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from consumers.services import prepare_topics
from producers.samples import sample_reply
from stream.local_kafka import find_free_port
from stream.metrics import GatewayMetrics
from stream.settings import FastTierSettings
from tests.fans_app import FansProcess, feedback, produce
from tests.stack import gateway_settings, produce_replies, read_topic, running_gateway
from tests.test_overlay_page import ARTIFACTS, until_clients
from tests.test_retraction import launch, overlay_page, page_shows, sample, until_metric

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


async def test_reports_past_the_threshold_take_the_bubble_off_the_page_and_it_never_comes_back(
    kafka_bootstrap, topic_prefix
):
    room = "room-reported"
    await prepare_topics(FastTierSettings(topic_prefix=topic_prefix), kafka_bootstrap)
    settings = gateway_settings(kafka_bootstrap, topic_prefix, port=find_free_port(), heartbeat_s=0.5,
                                ack_timeout_s=0)
    topics = settings.topics
    base = f"http://127.0.0.1:{settings.port}"
    said = [sample_reply(room, n) for n in range(3)]
    reported = said[1]
    fans = await FansProcess(kafka_bootstrap, topic_prefix, report_threshold=2).start()
    try:
        async with async_playwright() as playwright:
            browser = await launch(playwright)
            try:
                metrics = GatewayMetrics()
                async with running_gateway(settings, metrics):
                    page = await overlay_page(browser, base, room)
                    await until_clients(metrics, 1)
                    await produce_replies(kafka_bootstrap, topics.replies, said)
                    await page_shows(page, [r.reply_id for r in said])

                    # One report is under the threshold: the bubble stays while the app counts it.
                    await produce(kafka_bootstrap, topics.feedback, [feedback("report", reported, user="u1"),
                                                                    feedback("like", said[0], user="u1")])
                    await fans.until(lambda: _reports(fans, reported.reply_id, 1), "the first report counted")
                    await page_shows(page, [r.reply_id for r in said])

                    await produce(kafka_bootstrap, topics.feedback, [feedback("report", reported, user="u2")])
                    await page_shows(page, [said[0].reply_id, said[2].reply_id])
                    await until_metric(metrics, "idolstream_gateway_retractions_total", 1, reason="reports")
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "overlay-after-reports.png"), animations="disabled")

                    fresh = await overlay_page(browser, base, room)
                    await until_clients(metrics, 2)
                    later = sample_reply(room, 3)
                    await produce_replies(kafka_bootstrap, topics.replies, [later])
                    await page_shows(fresh, [later.reply_id])
                    await page_shows(page, [said[0].reply_id, said[2].reply_id, later.reply_id])
                    assert reported.reply_id not in await fresh.evaluate("window.added")
                    assert sample(metrics, "idolstream_gateway_retractions_total", reason="reports") == 1

                retractions = await read_topic(kafka_bootstrap, topics.replies_retracted, lambda rs: len(rs) >= 1)
                assert [(r["reply_id"], r["reason"], r["reports"]) for r in retractions] == [
                    (reported.reply_id, "reports", 2)]
            finally:
                await browser.close()
    finally:
        await fans.stop()


async def _reports(fans: FansProcess, reply_id: str, n: int) -> bool:
    tally = await fans.view(f"/tables/replies/{reply_id}")
    return bool(tally) and tally["reports"] == n
