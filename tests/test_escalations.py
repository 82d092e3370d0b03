"""What the fast tier remembers about items waiting on the deep tier."""

from stream.escalations import PendingEscalations


def test_an_answer_settles_the_item_and_it_never_expires():
    pending = PendingEscalations[str](capacity=4)
    pending.add("a", deadline=10.0, draft="draft-a")
    assert pending.settle("a").draft == "draft-a"
    assert pending.expired(100.0) == [] and len(pending) == 0


def test_items_past_their_deadline_expire_once_earliest_first():
    pending = PendingEscalations[str](capacity=4)
    pending.add("late", deadline=5.0, draft="x")
    pending.add("later", deadline=3.0, draft="y")
    pending.add("fine", deadline=50.0, draft="z")
    assert [w.item_id for w in pending.expired(6.0)] == ["later", "late"]
    assert pending.expired(7.0) == []
    assert pending.next_deadline() == 50.0


def test_settling_an_unknown_item_is_harmless():
    assert PendingEscalations[str](capacity=1).settle("nope") is None


def test_full_at_capacity():
    pending = PendingEscalations[str](capacity=2)
    pending.add("a", 1.0, "")
    assert not pending.full()
    pending.add("b", 1.0, "")
    assert pending.full()


def test_dropping_forgets_only_the_selected_items():
    pending = PendingEscalations[str](capacity=4)
    pending.add("a", 1.0, "p0")
    pending.add("b", 1.0, "p1")
    assert pending.drop(lambda draft: draft == "p0") == 1
    assert "a" not in pending and "b" in pending


def _escalation(item_id: str, partition: int, topic: str = "fan.images", tag: str = "1"):
    from datetime import timedelta

    from producers.samples import sample_item
    from stream.contracts import Cue, Draft, Escalation, Source, Timings, utcnow
    from stream.reasons import RouteReason

    item = sample_item(1).to_submission("room-1", item_id=item_id)
    now = utcnow()
    return Escalation(
        escalation_id=f"e-{item_id}-{partition}-{tag}", item=item, reason=RouteReason.MATHS,
        draft=Draft(text="draft", cue=Cue(emotion="happy", motion="wave"), tier="fast", model_id="m"),
        escalated_at=now, deadline_at=now + timedelta(seconds=8), holding_sent=True,
        fast_timings=Timings(item_created_at=now, queue_ms=0, admission_ms=0, inference_ms=0, replied_at=now),
        source=Source(topic=topic, partition=partition, offset=0),
    )


def test_a_worker_takes_over_unanswered_escalations_of_its_own_partitions_only():
    from stream.escalations import still_owed

    escalations = [_escalation("mine", 0), _escalation("answered", 0), _escalation("theirs", 1),
                   _escalation("other-topic", 0, "danmaku.screens")]
    owed = still_owed(escalations, {"answered"}, {("fan.images", 0)})
    assert [e.item.item_id for e in owed] == ["mine"]


def test_an_item_escalated_twice_is_owed_once_with_its_last_escalation():
    from stream.escalations import still_owed

    first, second = _escalation("twice", 0, tag="1"), _escalation("twice", 0, tag="2")
    owed = still_owed([first, second], set(), {("fan.images", 0)})
    assert [e.escalation_id for e in owed] == [second.escalation_id]
