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
