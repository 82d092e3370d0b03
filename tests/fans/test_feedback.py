"""Likes and reports: the Feedback v1 contract, and their tallies per reply and per model and persona version."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from stream.contracts import Feedback, UserRef, decode_feedback, new_id, utcnow
from stream.errors import InvalidEnvelope, ReasonCode
from stream.fans.feedback import (
    ModelTally, ReplyTally, model_key, over_report_threshold, should_retract, tally_answer, tally_early_feedback,
    tally_feedback, tally_model_feedback, tally_reply,
)
from tests.fans.test_profiles import answer, item


def feedback(kind: str, reply_id: str, **fields) -> Feedback:
    return Feedback(feedback_id=new_id(), kind=kind, reply_id=reply_id, room="r1",
                    user=UserRef(id="u9", display_name="Ben"), at=utcnow(), **fields)


def test_a_feedback_record_round_trips_and_a_bad_one_says_why():
    like = feedback("like", "rep-1")
    assert decode_feedback(like.to_json()) == like
    with pytest.raises(InvalidEnvelope) as bad:
        decode_feedback(orjson.dumps({**orjson.loads(like.to_json()), "kind": "love"}))
    assert bad.value.reason == ReasonCode.SCHEMA_VIOLATION and "kind" in bad.value.detail
    with pytest.raises(InvalidEnvelope) as garbage:
        decode_feedback(b"{not json")
    assert garbage.value.reason == ReasonCode.INVALID_JSON


def test_likes_and_reports_count_per_reply_and_per_model_and_persona_version():
    reply = answer(item()).model_copy(update={"persona_version": "mirai-2.0.0"})
    early, counted = tally_feedback(None, feedback("like", reply.reply_id))  # feedback read before the reply
    assert counted and early.model_id is None and tally_model_feedback(None, early, "like") is None
    tally, first = tally_reply(early, reply)
    assert first and tally_reply(tally, reply) == (tally, False)
    model = tally_early_feedback(tally_answer(None, reply), tally)  # the like that came first counts for the model
    tally, _ = tally_feedback(tally, feedback("report", reply.reply_id, reason="rude"))
    assert (tally.likes, tally.reports, tally.model_id, tally.persona_version, tally.tier) == (
        1, 1, "m", "mirai-2.0.0", "fast")
    model = tally_model_feedback(model, tally, "report")
    model = tally_answer(model, reply)
    assert (model.answers, model.likes, model.reports, model.like_rate) == (2, 1, 1, 0.5)
    assert model_key("m", "mirai-2.0.0") != model_key("m", None)
    assert ReplyTally.from_json(tally.to_json()) == tally and ModelTally.from_json(model.to_json()) == model
    assert (model + model).answers == 4


def test_the_same_feedback_read_twice_counts_once():
    like = feedback("like", "rep-3")
    tally, _ = tally_feedback(None, like)
    again, counted = tally_feedback(tally, like)
    assert not counted and again.likes == 1


def test_reports_over_the_threshold_retract_once_and_zero_turns_it_off():
    tally, _ = tally_feedback(tally_feedback(None, feedback("report", "rep-2"))[0], feedback("report", "rep-2"))
    assert over_report_threshold(tally, 2) and not over_report_threshold(tally, 3)
    assert not over_report_threshold(tally, 0)
    assert should_retract(tally, 2) and not should_retract(replace(tally, retracted=True), 2)
