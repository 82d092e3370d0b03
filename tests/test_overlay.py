import asyncio

import orjson
import pytest

from stream.flow import RecentIds
from stream.overlay import RESUME_NOTICES, Cursor, Entry, OverlayQueue, Published, Resume, RoomHub, reply_entry


def reply(room: str, item_id: str, role: str = "answer") -> dict:
    return {"room": room, "item_id": item_id, "role": role, "reply_id": f"{item_id}/{role}",
            "text": f"{role} to {item_id}"}


def hub(client_queue: int = 8, history: int = 16) -> RoomHub:
    return RoomHub(client_queue=client_queue, recent_item_ids=16, history_per_room=history)


async def next_entry(queue: OverlayQueue) -> Entry:
    """The next reply for the overlay, notices passed over."""
    while not isinstance(out := await queue.next_out(), Entry):
        pass
    return out


async def drain(queue: OverlayQueue) -> list[dict]:
    out = []
    while len(queue):
        entry = await next_entry(queue)
        frame = orjson.loads(entry.frame)
        assert frame["cursor"] == str(entry.cursor)
        out.append(frame["reply"])
    return out


def notices(queue: OverlayQueue) -> list[dict]:
    return [orjson.loads(n) for n in queue.take_notices()]


def publish_all(h: RoomHub, room: str, n: int, partition: int = 0, first_offset: int = 0) -> None:
    for k in range(n):
        h.publish(Cursor(partition, first_offset + k), reply(room, f"i{k}"))


def test_cursors_print_and_parse_back():
    assert str(Cursor(3, 1207)) == "3-1207"
    assert Cursor.parse("3-1207") == Cursor(3, 1207)
    for bad in ("", "3", "3-", "-1", "a-1", "3-1-2", "3-x"):
        with pytest.raises(ValueError):
            Cursor.parse(bad)


async def test_a_reply_reaches_every_overlay_of_its_room_and_no_other():
    h = hub()
    (a1, _), (a2, _), (b, _) = h.subscribe("a"), h.subscribe("a"), h.subscribe("b")
    assert h.publish(Cursor(0, 0), reply("a", "i1")).delivered == 2
    assert [r["item_id"] for r in await drain(a1)] == ["i1"]
    assert [r["item_id"] for r in await drain(a2)] == ["i1"]
    assert await drain(b) == []


async def test_a_second_reply_to_the_same_item_is_dropped():
    h = hub()
    q, _ = h.subscribe("a")
    h.publish(Cursor(0, 0), reply("a", "i1"))
    assert h.publish(Cursor(0, 1), reply("a", "i1")) is None
    assert len(await drain(q)) == 1


async def test_a_holding_line_then_its_answer_are_both_shown_once():
    h = hub()
    q, _ = h.subscribe("a")
    assert h.publish(Cursor(0, 0), reply("a", "i1", "holding")).delivered == 1
    assert h.publish(Cursor(0, 1), reply("a", "i1", "holding")) is None
    assert h.publish(Cursor(0, 2), reply("a", "i1")).delivered == 1
    assert h.publish(Cursor(0, 3), reply("a", "i1")) is None, "a draft racing the deep answer is not shown twice"
    assert [r["role"] for r in await drain(q)] == ["holding", "answer"]


async def test_a_holding_line_after_the_answer_is_not_shown():
    h = hub()
    q, _ = h.subscribe("a")
    h.publish(Cursor(0, 0), reply("a", "i1"))
    assert h.publish(Cursor(0, 1), reply("a", "i1", "holding")) is None
    assert [r["role"] for r in await drain(q)] == ["answer"]


async def test_a_full_overlay_queue_drops_its_oldest_and_keeps_order():
    h = hub(client_queue=2)
    q, _ = h.subscribe("a")
    results = [h.publish(Cursor(0, n), reply("a", f"i{n}")) for n in range(4)]
    assert [(r.delivered, r.dropped) for r in results] == [(1, 0), (1, 0), (0, 1), (0, 1)]
    assert [r["item_id"] for r in await drain(q)] == ["i2", "i3"]
    assert q.dropped == 2


async def test_next_entry_waits_for_a_publish():
    h = hub()
    q, _ = h.subscribe("a")
    waiter = asyncio.ensure_future(next_entry(q))
    await asyncio.sleep(0)
    assert not waiter.done()
    h.publish(Cursor(0, 0), reply("a", "i1"))
    assert (await asyncio.wait_for(waiter, 1)).reply_id == "i1/answer"


async def test_a_resume_gets_exactly_the_replies_after_its_cursor():
    h = hub()
    publish_all(h, "a", 5, first_offset=10)          # offsets 10..14
    h.publish(Cursor(0, 15), reply("b", "other"))     # another room on the same partition
    q, resume = h.subscribe("a", after=Cursor(0, 11))
    assert resume == Resume(3, True)
    assert [r["item_id"] for r in await drain(q)] == ["i2", "i3", "i4"]
    h.publish(Cursor(0, 16), reply("a", "i5"))
    assert [r["item_id"] for r in await drain(q)] == ["i5"]


async def test_a_resume_beyond_the_history_says_it_is_incomplete():
    h = hub(history=3)
    publish_all(h, "a", 6)                             # the history keeps offsets 3..5
    q, resume = h.subscribe("a", after=Cursor(0, 1))
    assert resume == Resume(3, False)
    assert [r["item_id"] for r in await drain(q)] == ["i3", "i4", "i5"]
    _, resume = h.subscribe("a", after=Cursor(0, 2))
    assert resume == Resume(3, True), "nothing after offset 2 was forgotten"


async def test_a_gateway_behind_the_overlay_does_not_send_what_it_already_showed():
    h = hub()
    publish_all(h, "a", 2)                             # this gateway has read offsets 0..1
    q, resume = h.subscribe("a", after=Cursor(0, 3))   # the overlay saw up to 3 elsewhere
    assert resume == Resume(0, True)
    publish_all(h, "a", 6)                             # catching up: 2..5 (0, 1 are duplicates)
    assert [r["item_id"] for r in await drain(q)] == ["i4", "i5"]


async def test_the_next_reply_waits_for_the_ack_of_the_one_shown():
    h = hub()
    q, _ = h.subscribe("a")
    publish_all(h, "a", 2)
    first = await next_entry(q)
    q.sent(first)
    waiting = asyncio.ensure_future(q.wait_ack(5))
    await asyncio.sleep(0)
    assert not q.ack(cursor="0-1"), "an ack for another reply does not release"
    assert not waiting.done()
    assert q.ack(cursor=str(first.cursor))
    assert await waiting is True


async def test_an_unacked_reply_releases_the_next_after_the_timeout():
    h = hub()
    q, _ = h.subscribe("a")
    publish_all(h, "a", 1)
    entry = await next_entry(q)
    q.sent(entry)
    assert await q.wait_ack(0.01) is False
    q.give_up()
    assert not q.ack(reply_id=entry.reply_id), "a late ack changes nothing"


def test_recent_ids_forget_the_oldest_beyond_capacity():
    ids = RecentIds(2)
    assert ids.add("x") and ids.add("y") and not ids.add("x")
    assert ids.add("z")  # evicts y (x was refreshed)
    assert ids.add("y") and not ids.add("z")


async def test_unsubscribed_overlays_get_nothing_and_idle_rooms_are_forgotten_first():
    h = RoomHub(client_queue=2, recent_item_ids=16, history_per_room=4, max_rooms=2)
    q, _ = h.subscribe("a")
    h.unsubscribe(q)
    assert h.publish(Cursor(0, 0), reply("a", "i1")).delivered == 0 and h.clients() == 0
    live, _ = h.subscribe("b")
    h.publish(Cursor(0, 1), reply("c", "i1"))         # a third room: idle "a" is forgotten, not "b"
    assert h.publish(Cursor(0, 2), reply("b", "i1")).delivered == 1
    _, resume = h.subscribe("a", after=Cursor(0, -1))
    assert resume == Resume(0, False), "room a's history went with it, and a resume from before says so"


async def test_a_new_room_is_served_even_when_every_remembered_room_has_overlays():
    h = RoomHub(client_queue=2, recent_item_ids=16, history_per_room=4, max_rooms=1)
    h.subscribe("a")
    q, _ = h.subscribe("b")
    assert h.publish(Cursor(0, 0), reply("b", "i1")).delivered == 1
    assert h.publish(Cursor(0, 1), reply("c", "i1")).delivered == 0
    assert h.rooms() == 2 and h.clients() == 2


def test_a_resume_from_before_the_gateway_began_reading_is_incomplete():
    h = hub()
    h.start_at(0, 200)                                 # a restarted gateway rebuilt from offset 200
    publish_all(h, "a", 3, first_offset=200)
    _, resume = h.subscribe("a", after=Cursor(0, 50))
    assert resume == Resume(3, False), "offsets 51..199 were never read here"
    _, resume = h.subscribe("a", after=Cursor(0, 199))
    assert resume == Resume(3, True)


def test_room_histories_stay_within_their_byte_budget_oldest_activity_first():
    frame_bytes = len(reply_entry_bytes())
    h = RoomHub(client_queue=8, recent_item_ids=64, history_per_room=100, history_max_bytes=10 * frame_bytes)
    live, _ = h.subscribe("live")
    for n, room in enumerate(["idle"] * 4 + ["later"] * 4 + ["live"] * 12):  # live: half the budget at most
        h.publish(Cursor(0, n), reply(room, f"i{n}"))
        h.advance(Cursor(0, n))
    assert h.history_bytes() <= 10 * frame_bytes + frame_bytes
    _, resume = h.subscribe("later", after=Cursor(0, 3))
    assert resume.replayed == 4, "the room active more recently was kept whole"
    _, resume = h.subscribe("idle", after=Cursor(0, 1))
    assert resume == Resume(0, False), "the idle room was forgotten first, and a resume says so"


def reply_entry_bytes() -> bytes:
    from stream.overlay import reply_entry

    return reply_entry(Cursor(0, 10), reply("live", "i10")).frame


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_overlays_coming_and_going_in_rooms_that_never_spoke_leave_nothing_behind():
    h = hub()
    for n in range(500):
        q, _ = h.subscribe(f"room-{n}")
        h.unsubscribe(q)
    assert (h.rooms_held(), h.clients(), h.rooms()) == (0, 0, 0)


def test_a_quiet_room_nobody_watches_is_forgotten_after_the_history_window():
    clock = FakeClock()
    h = RoomHub(client_queue=8, recent_item_ids=16, history_per_room=16, quiet_room_s=900, clock=clock)
    watched, _ = h.subscribe("watched")
    for n, room in enumerate(["left", "watched", "left"]):
        h.advance(Cursor(0, n))
        h.publish(Cursor(0, n), reply(room, f"i{n}"))
    gone, _ = h.subscribe("left")
    clock.now += 600
    h.unsubscribe(gone)                                # its overlay left 600 s after its last reply
    clock.now += 899
    assert h.forget_quiet_rooms() == 0, "a room is kept for overlays that come back within the window"
    _, resume = h.subscribe("left", after=Cursor(0, 0))
    assert resume == Resume(1, True)
    h.unsubscribe(_)

    clock.now += 901
    assert h.forget_quiet_rooms() == 1 and h.rooms_held() == 1, "the watched room stays, however quiet"
    assert h.history_bytes() == len(reply_entry(Cursor(0, 1), reply("watched", "i1")).frame), "only the watched room's"
    q, resume = h.subscribe("left", after=Cursor(0, 0))
    assert resume == Resume(0, False), "a resume from before the forgotten reply says it is incomplete"
    h.unsubscribe(q)
    _, resume = h.subscribe("left", after=Cursor(0, 2))
    assert resume == Resume(0, True), "one that had seen the room's last reply missed nothing"


def test_a_history_entry_costs_about_its_frame_so_the_byte_budget_holds():
    import tracemalloc

    r = reply("a", "i1") | {"text": "x" * 500}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [reply_entry(Cursor(0, n), r) for n in range(1000)]
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_entry < 2 * len(kept[0].frame) + 512, f"{per_entry:.0f} bytes held for a {len(kept[0].frame)}-byte frame"


# -- pictures she drew -------------------------------------------------------------------


def picture_reply(room: str, item_id: str, chars: int = 100_000) -> dict:
    return reply(room, item_id) | {"picture": "data:image/png;base64," + "A" * chars}


def test_a_reply_with_a_picture_costs_its_whole_frame_in_the_history_budget():
    h = hub()
    entry = reply_entry(Cursor(0, 0), picture_reply("a", "i0", 300_000))
    h.publish(Cursor(0, 0), picture_reply("a", "i0", 300_000))
    assert h.history_bytes() == len(entry.frame) > 300_000


async def test_a_resume_replays_a_reply_with_its_picture():
    h = hub()
    h.publish(Cursor(0, 0), reply("a", "i0"))
    h.publish(Cursor(0, 1), picture_reply("a", "i1"))
    q, resume = h.subscribe("a", after=Cursor(0, 0))
    assert resume == Resume(1, True)
    assert (await drain(q))[0]["picture"] == picture_reply("a", "i1")["picture"]


async def test_one_room_flooded_with_pictures_cannot_push_every_other_room_out():
    frame = len(reply_entry(Cursor(0, 39), picture_reply("flood", "i39")).frame)  # the largest of them
    h = RoomHub(client_queue=8, recent_item_ids=64, history_per_room=100, history_max_bytes=6 * frame)
    for n in range(3):
        h.publish(Cursor(0, n), reply("quiet", f"q{n}"))
        h.advance(Cursor(0, n))
    for n in range(3, 40):
        h.publish(Cursor(0, n), picture_reply("flood", f"i{n}"))
        h.advance(Cursor(0, n))
        assert h.history_bytes() <= 6 * frame
    _, resume = h.subscribe("quiet", after=Cursor(0, 0))
    assert resume == Resume(2, True), "the quiet room, unwatched, keeps its history"
    q, resume = h.subscribe("flood", after=Cursor(0, 3))
    assert resume.replayed == 3 and not resume.complete, "the flooded room keeps its newest half of the budget"
    assert [r["item_id"] for r in await drain(q)] == ["i37", "i38", "i39"]


def test_a_room_keeps_its_newest_reply_even_past_its_share_of_the_budget():
    h = RoomHub(client_queue=8, recent_item_ids=64, history_per_room=100, history_max_bytes=2**20,
                room_max_bytes=1000)
    h.publish(Cursor(0, 0), reply("a", "i0"))
    h.publish(Cursor(0, 1), picture_reply("a", "i1"))
    _, resume = h.subscribe("a", after=Cursor(0, 0))
    assert resume == Resume(1, True), "the newest reply is kept; the older one made way"
    assert h.history_bytes() == len(reply_entry(Cursor(0, 1), picture_reply("a", "i1")).frame)


# -- retraction --------------------------------------------------------------------------


async def test_a_retracted_reply_leaves_the_history_and_a_resume_never_replays_it():
    h = hub()
    publish_all(h, "a", 3)                             # i0, i1, i2 at offsets 0..2
    done = h.retract("a", "i1/answer")
    assert done is not None and done.from_history
    q, resume = h.subscribe("a", after=Cursor(0, -1))
    assert resume == Resume(2, True), "taken back is not lost: the resume is still complete"
    assert notices(q) == [{"type": "retract", "reply_id": "i1/answer", "room": "a"}], "told again, in case"
    assert [r["item_id"] for r in await drain(q)] == ["i0", "i2"]
    assert h.history_bytes() == sum(len(reply_entry(Cursor(0, n), reply("a", f"i{n}")).frame) for n in (0, 2))


async def test_overlays_that_were_sent_a_retracted_reply_are_told_and_others_drop_it_unseen():
    h = hub()
    shown, _ = h.subscribe("a")
    waiting, _ = h.subscribe("a")
    other, _ = h.subscribe("b")
    publish_all(h, "a", 2)
    assert [r["item_id"] for r in await drain(shown)] == ["i0", "i1"]
    done = h.retract("a", "i0/answer")
    assert (done.unqueued, done.notified) == (1, 1)
    assert notices(shown) == [{"type": "retract", "reply_id": "i0/answer", "room": "a"}]
    assert notices(waiting) == [] and [r["item_id"] for r in await drain(waiting)] == ["i1"]
    assert notices(other) == [] and len(other) == 0, "another room hears nothing of it"


async def test_a_notice_goes_out_before_waiting_replies():
    h = hub()
    q, _ = h.subscribe("a")
    publish_all(h, "a", 1)
    await next_entry(q)
    h.publish(Cursor(0, 1), reply("a", "later"))
    h.retract("a", "i0/answer")
    assert orjson.loads(await q.next_out())["type"] == "retract"
    assert (await q.next_out()).reply_id == "later/answer"


async def test_a_reply_that_comes_after_its_retraction_is_never_shown_nor_kept():
    h = hub()
    q, _ = h.subscribe("a")
    early = h.retract("a", "i0/answer")
    assert early is not None and not early.from_history
    assert h.publish(Cursor(0, 0), reply("a", "i0")) == Published(0, 0, retracted=True)
    assert h.publish(Cursor(0, 1), reply("a", "i0")) is None, "its item was answered all the same"
    h.publish(Cursor(0, 2), reply("a", "i1"))
    assert [r["item_id"] for r in await drain(q)] == ["i1"]
    _, resume = h.subscribe("a", after=Cursor(0, -1))
    assert resume.replayed == 1


def test_a_retraction_acts_once():
    h = hub()
    publish_all(h, "a", 1)
    assert h.retract("a", "i0/answer") is not None
    assert h.retract("a", "i0/answer") is None


def test_remembered_retractions_are_bounded_per_room():
    h = RoomHub(client_queue=8, recent_item_ids=16, history_per_room=16, recent_retractions=2)
    for n in range(3):
        h.retract("a", f"early-{n}/answer")
    assert not h.publish(Cursor(0, 0), reply("a", "early-0")).retracted, "forgotten: the oldest of three"
    assert h.publish(Cursor(0, 1), reply("a", "early-2")).retracted


def test_a_room_with_only_a_retraction_is_kept_when_its_overlay_leaves():
    h = hub()
    q, _ = h.subscribe("a")
    h.retract("a", "soon/answer")
    h.unsubscribe(q)
    assert h.rooms_held() == 1
    assert h.publish(Cursor(0, 0), reply("a", "soon")).retracted


async def test_retracting_the_reply_being_shown_releases_the_overlays_pacing():
    h = hub()
    q, _ = h.subscribe("a")
    publish_all(h, "a", 2)
    first = await next_entry(q)
    q.sent(first)
    waiting = asyncio.ensure_future(q.wait_ack(5))
    await asyncio.sleep(0)
    h.retract("a", first.reply_id)
    assert await asyncio.wait_for(waiting, 1) is True, "its bubble is gone: no ack to wait for"
    assert notices(q) == [{"type": "retract", "reply_id": first.reply_id, "room": "a"}]


async def test_a_notice_interrupts_the_wait_for_another_replys_ack():
    h = hub()
    q, _ = h.subscribe("a")
    publish_all(h, "a", 2)
    await next_entry(q)
    second = await next_entry(q)
    q.sent(second)
    waiting = asyncio.ensure_future(q.wait_ack(5))
    await asyncio.sleep(0)
    h.retract("a", "i0/answer")
    assert await asyncio.wait_for(waiting, 1) is False, "not acked yet: the notice is to be sent first"
    assert len(notices(q)) == 1
    assert q.ack(reply_id=second.reply_id), "the wait for the shown reply's ack goes on"


def test_a_resuming_overlay_is_told_only_the_rooms_last_retractions():
    h = hub(client_queue=32)
    for n in range(RESUME_NOTICES + 3):
        h.retract("a", f"r{n}")
    q, _ = h.subscribe("a", after=Cursor(0, 0))
    assert [n["reply_id"] for n in notices(q)] == [f"r{n}" for n in range(3, RESUME_NOTICES + 3)]
    fresh, _ = h.subscribe("a")
    assert notices(fresh) == [], "a fresh overlay shows nothing yet"
