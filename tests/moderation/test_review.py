"""The review queue, without a broker: pending replies, decisions, their audit records, restarts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from producers.client import build_submission
from stream.contracts import Cue, HeldReply, ModerationRecord, Timings, new_id, utcnow
from stream.moderation.review import ReviewError, ReviewQueue
from stream.reasons import ModerationAction, ModerationSide, ModerationStage, RouteReason
from stream.replies import build_reply


def held(text: str = "Thank you for the drawing!", ago_s: float = 0.0) -> HeldReply:
    now = utcnow()
    sub = build_submission(room="r", user_id="u", display_name="Aki", image_bytes=b"x", mime="image/png", text="hi")
    reply = build_reply(sub, tier="fast", route_reason=RouteReason.SIMPLE, model_id="m", text=text,
                        cue=Cue(emotion="happy", motion="bounce"),
                        timings=Timings(item_created_at=now, queue_ms=0, admission_ms=0, preprocess_ms=0,
                                        inference_ms=0, replied_at=now))
    why = ModerationRecord(record_id=new_id(), item_id=sub.item_id, room="r", user=sub.user,
                           side=ModerationSide.FAN, stage=ModerationStage.WORD_FILTER,
                           action=ModerationAction.REVIEW, categories=["self_harm"], at=now)
    return HeldReply(reply=reply, why=[why], fan_text="hi", held_at=now - timedelta(seconds=ago_s))


def test_pending_replies_are_listed_oldest_first_with_the_age_of_the_oldest():
    queue = ReviewQueue()
    young, old = held(ago_s=5), held(ago_s=60)
    assert queue.held(young) and queue.held(old)
    assert [h.reply.reply_id for h in queue.pending()] == [old.reply.reply_id, young.reply.reply_id]
    assert queue.oldest_age_s(utcnow()) == pytest.approx(60, abs=1)
    assert not queue.held(old)  # read twice (a rebalance, a second read): listed once


def test_an_approval_records_who_before_and_after_and_gives_the_reply_to_send():
    queue, waiting = ReviewQueue(), held("Thank you for the drawing!")
    queue.held(waiting)
    decided = queue.decide(waiting.reply.reply_id, "Rin", "approve", utcnow(), text="  Thank you,   Aki! ")
    assert decided.reply.text == "Thank you, Aki!" and decided.reply.reply_id == waiting.reply.reply_id
    record = decided.decision
    assert (record.operator, record.decision, record.edited) == ("Rin", "approve", True)
    assert (record.before, record.after) == ("Thank you for the drawing!", "Thank you, Aki!")
    assert len(queue) == 0


def test_a_rejection_sends_nothing_and_a_second_decision_is_refused():
    queue, waiting = ReviewQueue(), held()
    queue.held(waiting)
    decided = queue.decide(waiting.reply.reply_id, "Rin", "reject", utcnow())
    assert decided.reply is None and decided.decision.after is None and not decided.decision.edited
    with pytest.raises(ReviewError) as again:
        queue.decide(waiting.reply.reply_id, "Kai", "approve", utcnow())
    assert again.value.status == 409
    with pytest.raises(ReviewError) as unknown:
        queue.decide("nope", "Kai", "approve", utcnow())
    assert unknown.value.status == 404


def test_a_decision_read_before_its_reply_keeps_it_out_of_the_queue_after_a_restart():
    first, waiting = ReviewQueue(), held()
    first.held(waiting)
    record = first.decide(waiting.reply.reply_id, "Rin", "approve", utcnow()).decision
    restarted = ReviewQueue()
    restarted.settled(record)  # partitions are read in any order
    assert not restarted.held(waiting) and len(restarted) == 0


def test_a_full_queue_counts_what_it_cannot_list_and_refuses_empty_approvals():
    queue = ReviewQueue(capacity=1)
    first, second = held(), held()
    assert queue.held(first) and not queue.held(second)
    assert queue.unlisted == 1
    with pytest.raises(ReviewError) as empty:
        queue.decide(first.reply.reply_id, "Rin", "approve", utcnow(), text="   ")
    assert empty.value.status == 400 and len(queue) == 1  # refused: still waiting
