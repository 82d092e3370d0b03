"""Live load-shedding: stale items, flooding fans, paced rooms, repeated item ids."""

from dataclasses import replace

from stream.reasons import ShedReason
from stream.shedding import Arrival, LoadShedder, SheddingPolicy, SlidingWindowCounter

OPEN = SheddingPolicy(max_age_s=30, user_max_items=0, room_max_replies=0)


def arrival(item_id, room="r", user="u", age=0.0, priority=0):
    return Arrival(item_id, room, user, age, priority)


def test_items_past_their_max_age_are_shed_as_stale():
    shedder = LoadShedder(OPEN)
    assert shedder.triage([arrival("a", age=29.0), arrival("b", age=31.0)], now=0.0) == [None, ShedReason.STALE]


def test_an_item_id_is_taken_in_once():
    shedder = LoadShedder(OPEN)
    assert shedder.triage([arrival("a"), arrival("a")], 0.0) == [None, ShedReason.DUPLICATE]
    assert shedder.triage([arrival("a")], 1.0) == [ShedReason.DUPLICATE]


def test_a_flooding_fan_is_limited_while_another_fan_in_the_room_is_not():
    shedder = LoadShedder(replace(OPEN, user_max_items=2, user_window_s=10))
    flood = [arrival(f"f{i}", user="flooder") for i in range(5)]
    verdicts = shedder.triage([*flood, arrival("calm-1", user="calm")], now=0.0)
    assert verdicts == [None, None] + [ShedReason.USER_RATE_LIMITED] * 3 + [None]
    assert shedder.triage([arrival("f9", user="flooder")], now=10.0) == [None], "a new window gives new places"


def test_the_same_fan_in_another_room_has_its_own_budget():
    shedder = LoadShedder(replace(OPEN, user_max_items=1))
    assert shedder.triage([arrival("a", room="r1"), arrival("b", room="r2")], 0.0) == [None, None]


def test_a_paced_room_answers_its_highest_priority_items_first():
    shedder = LoadShedder(replace(OPEN, room_max_replies=2, room_window_s=10))
    batch = [arrival("bare", priority=0), arrival("asked", priority=3), arrival("wrote", priority=1)]
    assert shedder.triage(batch, 0.0) == [ShedReason.ROOM_PACED, None, None]
    assert shedder.triage([arrival("next", priority=9)], 5.0) == [ShedReason.ROOM_PACED]
    assert shedder.triage([arrival("after", priority=0)], 10.0) == [None]


def test_pacing_one_room_leaves_other_rooms_alone():
    shedder = LoadShedder(replace(OPEN, room_max_replies=1))
    verdicts = shedder.triage([arrival("a", room="busy"), arrival("b", room="busy"), arrival("c", room="quiet")], 0.0)
    assert verdicts == [None, ShedReason.ROOM_PACED, None]


def test_shed_items_do_not_use_up_budgets():
    shedder = LoadShedder(replace(OPEN, user_max_items=1, room_max_replies=1))
    assert shedder.triage([arrival("old", age=99.0), arrival("new")], 0.0) == [ShedReason.STALE, None]


def test_windows_forget_the_least_recent_keys_beyond_their_bound():
    counter = SlidingWindowCounter(limit=1, window_s=60, max_keys=3)
    for i in range(50):
        counter.record(f"fan-{i}", 0.0)
    assert len(counter) == 3
    assert counter.room_left("fan-0", 1.0) == 1, "a forgotten fan starts afresh"
    assert counter.room_left("fan-49", 1.0) == 0
