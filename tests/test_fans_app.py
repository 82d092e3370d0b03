"""The fans app on the real broker: tables that count once, survive a stop and a kill; bad feedback dead-lettered."""

from __future__ import annotations

import re
import signal

import orjson
import pytest

from consumers.services import prepare_topics
from stream.contracts import ModerationRecord, ShedItem, Source, UserRef, new_id, utcnow
from stream.reasons import ModerationAction, ModerationSide, ModerationStage, ShedReason
from stream.settings import FastTierSettings
from stream.topics import TopicNames
from tests.fans_app import FansProcess, feedback, produce, reply_to, submission
from tests.stack import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


def model_counts(view) -> dict | None:
    if not view:
        return None
    return {(m["model_id"], m["persona_version"]): (m["answers"], m["likes"], m["reports"]) for m in view["models"]}


async def test_the_tables_count_once_and_come_back_intact_after_a_clean_stop_and_a_kill(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    await prepare_topics(FastTierSettings(topic_prefix=topic_prefix), kafka_bootstrap)
    aki = [submission("room1", "aki", "Aki", f"drawing {n}") for n in range(3)]
    ben = submission("room1", "ben", "Ben", "a comment wall", kind="danmaku_screenshot")
    replies = [reply_to(sub, f"So pretty, {n}!", model_id="m-a", persona_version="p1") for n, sub in enumerate(aki)]
    replies.append(reply_to(ben, "Hi Ben!", model_id="m-b", persona_version="p2", tier="deep"))
    like_twice = feedback("like", replies[0])
    fans = await FansProcess(kafka_bootstrap, topic_prefix, report_threshold=0).start()
    try:
        await produce(kafka_bootstrap, names.fan_images, [*aki, aki[0]])  # the first item delivered twice
        await produce(kafka_bootstrap, names.danmaku_screens, [ben])
        # Feedback may be read before the reply it is about: it still counts for the reply's model.
        await produce(kafka_bootstrap, names.feedback, [feedback("like", replies[3])])
        await produce(kafka_bootstrap, names.replies, [*replies, replies[1]])  # one reply read twice
        await produce(kafka_bootstrap, names.feedback, [
            like_twice, like_twice, feedback("like", replies[1]), feedback("report", replies[1]),
            ("room1", b"{not json"),  # garbage
            ("room1", orjson.dumps({**orjson.loads(feedback("like", replies[2]).to_json()), "kind": "love"})),
            ("room2", feedback("like", replies[2]).to_json()),  # keyed by another room than its own
        ])
        expected = {("m-a", "p1"): (3, 2, 1), ("m-b", "p2"): (1, 1, 0)}
        counts = await fans.until(lambda: _counts_are(fans, expected), "the model tallies")
        assert counts == expected

        letters = await read_topic(kafka_bootstrap, names.dlq, lambda got: len(got) >= 3)
        assert sorted(letter["reason"] for letter in letters) == ["invalid_json", "schema_violation", "wrong_key"]
        assert all(letter["source"]["topic"] == names.feedback for letter in letters)

        aki_profile = await fans.view("/tables/fans/room1/aki")
        assert (aki_profile["items_sent"], aki_profile["replies_received"]) == (3, 3)
        assert aki_profile["last_sent_text"] == "drawing 2" and aki_profile["last_reply_text"] == "So pretty, 2!"
        reply = await fans.view(f"/tables/replies/{replies[1].reply_id}")
        assert (reply["likes"], reply["reports"], reply["model_id"], reply["tier"]) == (1, 1, "m-a", "fast")
        windows = (await fans.view("/tables/rooms/room1"))["windows"]
        assert sum(w["items"] for w in windows) == 4 and sum(w["answered"] for w in windows) == 4
        assert sum(w["likes"] for w in windows) == 3 and sum(w["reports"] for w in windows) == 1

        for stop in (signal.SIGTERM, signal.SIGKILL):
            await produce(kafka_bootstrap, names.feedback, [feedback("like", replies[2])])
            answers, likes, reports = expected[("m-a", "p1")]
            expected[("m-a", "p1")] = (answers, likes + 1, reports)
            await fans.until(lambda: _counts_are(fans, expected), f"the like before {stop.name}")
            await fans.stop(stop)
            await fans.start()  # ready: its tables are recovered from their changelogs
            assert model_counts(await fans.view("/tables/models")) == expected, f"after {stop.name}"
            assert (await fans.view("/tables/fans/room1/aki"))["items_sent"] == 3, f"after {stop.name}"
            assert sum(w["items"] for w in (await fans.view("/tables/rooms/room1"))["windows"]) == 4
    finally:
        await fans.stop()


async def _counts_are(fans: FansProcess, expected: dict) -> dict | None:
    counts = model_counts(await fans.view("/tables/models"))
    return counts if counts == expected else None


async def test_the_table_views_are_for_operators_only(kafka_bootstrap, topic_prefix):
    import httpx

    await prepare_topics(FastTierSettings(topic_prefix=topic_prefix), kafka_bootstrap)
    fans = await FansProcess(kafka_bootstrap, topic_prefix).start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{fans.url}/tables/models")).status_code == 401
            bad = await client.get(f"{fans.url}/tables/models", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            assert (await client.get(f"{fans.url}/router")).status_code == 404  # faust's open routes are off
            metrics = (await client.get(f"{fans.url}/metrics")).text
            assert "idolstream_fans_ready 1.0" in metrics and "idolstream_fans_lag" in metrics
        assert await fans.view("/tables/models") == {"models": []}
    finally:
        await fans.stop()


def shed(room: str, user: str, name: str, reason=ShedReason.ROOM_PACED, item_id: str | None = None) -> ShedItem:
    return ShedItem(shed_id=new_id(), reason=reason, item_id=item_id or new_id(), room=room, kind="fan_image",
                    user=UserRef(id=user, display_name=name), age_ms=10.0,
                    source=Source(topic="fan.images", partition=0, offset=0), at=utcnow())


def blocked(room: str, user: str, name: str):
    return ModerationRecord(record_id=new_id(), item_id=new_id(), room=room, user=UserRef(id=user, display_name=name),
                            side=ModerationSide.FAN, stage=ModerationStage.WORD_FILTER, action=ModerationAction.BLOCK,
                            categories=["abuse"], at=utcnow())


def thanked(text: str) -> str:
    found = re.fullmatch(r"Thank you (.+) for the drawings!|The drawings from (.+): thank you, I saw them all!", text)
    assert found, text
    return found.group(1) or found.group(2)


async def test_shed_fans_are_thanked_by_name_in_one_digest_per_room_and_window(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    await prepare_topics(FastTierSettings(topic_prefix=topic_prefix), kafka_bootstrap)
    fans = await FansProcess(kafka_bootstrap, topic_prefix, digest_window_s=2, digest_max_names=2).start()
    try:
        aki_item = new_id()
        await produce(kafka_bootstrap, names.moderation, [blocked("roomA", "dan", "Dan")])
        await produce(kafka_bootstrap, names.shed, [
            shed("roomA", "aki", "Aki", item_id=aki_item), shed("roomA", "aki", "Aki", item_id=aki_item),
            shed("roomA", "aki", "Aki"), shed("roomA", "ben", "Ben", ShedReason.USER_RATE_LIMITED),
            shed("roomA", "dan", "Dan"),  # moderation blocked Dan: never named
            shed("roomA", "eve", "Eve", ShedReason.STALE),  # waited too long: not a thank-you
            shed("roomA", "chen", "Chen"), shed("roomB", "fay", "Fay"),
        ])

        def digests(records):
            return [r for r in records if r.get("role") == "digest"]

        got = digests(await read_topic(kafka_bootstrap, names.replies, lambda rs: len(digests(rs)) >= 2))
        by_room = {d["room"]: d for d in got}
        # Either of her English lines: "Thank you {names} for the drawings!" or "The drawings from {names}: ..."
        assert thanked(by_room["roomA"]["text"]) == "Aki, Ben and 1 more"  # Chen is the 1 more; Dan and Eve not
        assert thanked(by_room["roomB"]["text"]) == "Fay"
        assert {d["tier"] for d in got} == {"fallback"}
        assert by_room["roomA"]["in_reply_to"]["display_name"] == "everyone"

        # A later window of the same room is its own digest; the first windows were not sent twice.
        await produce(kafka_bootstrap, names.shed, [shed("roomB", "gus", "Gus")])
        got = digests(await read_topic(kafka_bootstrap, names.replies, lambda rs: len(digests(rs)) >= 3))
        assert sorted(thanked(d["text"]) for d in got) == ["Aki, Ben and 1 more", "Fay", "Gus"]
        windows = (await fans.view("/tables/rooms/roomA"))["windows"]
        assert sum(w["shed"] for w in windows) == 6  # every shed item once: Aki's item read twice counts once
    finally:
        await fans.stop()


async def test_reports_past_the_room_s_threshold_retract_the_reply_once(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    await prepare_topics(FastTierSettings(topic_prefix=topic_prefix), kafka_bootstrap)
    fans = await FansProcess(kafka_bootstrap, topic_prefix, report_threshold=2,
                             room_report_thresholds="quiet=1").start()
    try:
        loud = reply_to(submission("room1", "aki", "Aki"), "Hi Aki!")
        quiet = reply_to(submission("quiet", "ben", "Ben"), "Hi Ben!")
        await produce(kafka_bootstrap, names.replies, [loud, quiet])
        await produce(kafka_bootstrap, names.feedback, [feedback("report", loud), feedback("like", quiet)])
        assert (await fans.until(lambda: fans.view(f"/tables/replies/{loud.reply_id}"), "loud's tally"))["reports"] >= 0
        await fans.until(lambda: _reports_are(fans, loud.reply_id, 1), "one report on loud")
        assert not await read_topic(kafka_bootstrap, names.replies_retracted, lambda rs: True)  # under the threshold

        await produce(kafka_bootstrap, names.feedback, [feedback("report", loud), feedback("report", quiet),
                                                        feedback("report", loud)])
        await fans.until(lambda: _reports_are(fans, loud.reply_id, 3), "three reports on loud")
        retracted = await read_topic(kafka_bootstrap, names.replies_retracted, lambda rs: len(rs) >= 2)
        assert sorted((r["room"], r["reply_id"], r["reason"], r["reports"]) for r in retracted) == sorted([
            ("room1", loud.reply_id, "reports", 2), ("quiet", quiet.reply_id, "reports", 1)])
        assert retracted[0]["item_id"] in (loud.item_id, quiet.item_id)
        assert (await fans.view(f"/tables/replies/{loud.reply_id}"))["retracted"] is True
    finally:
        await fans.stop()


async def _reports_are(fans: FansProcess, reply_id: str, n: int) -> bool:
    tally = await fans.view(f"/tables/replies/{reply_id}")
    return bool(tally) and tally["reports"] == n
