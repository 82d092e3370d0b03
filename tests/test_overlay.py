import asyncio

import orjson

from stream.flow import RecentIds
from stream.overlay import OverlayQueue, RoomHub


def reply(room: str, item_id: str, role: str = "answer") -> dict:
    return {"room": room, "item_id": item_id, "role": role, "text": f"{role} to {item_id}"}


async def frames(queue: OverlayQueue) -> list[dict]:
    out = []
    while len(queue):
        out.append(orjson.loads(await queue.next_frame())["reply"])
    return out


async def test_a_reply_reaches_every_overlay_of_its_room_and_no_other():
    hub = RoomHub(client_queue=8, recent_item_ids=16)
    a1, a2, b = hub.subscribe("a"), hub.subscribe("a"), hub.subscribe("b")
    assert hub.publish(reply("a", "i1")) == (2, 0)
    assert [r["item_id"] for r in await frames(a1)] == ["i1"]
    assert [r["item_id"] for r in await frames(a2)] == ["i1"]
    assert await frames(b) == []


async def test_a_second_reply_to_the_same_item_is_dropped():
    hub = RoomHub(client_queue=8, recent_item_ids=16)
    q = hub.subscribe("a")
    hub.publish(reply("a", "i1"))
    assert hub.publish(reply("a", "i1")) is None
    assert len(await frames(q)) == 1


async def test_a_holding_line_then_its_answer_are_both_shown_once():
    hub = RoomHub(client_queue=8, recent_item_ids=16)
    q = hub.subscribe("a")
    assert hub.publish(reply("a", "i1", "holding")) == (1, 0)
    assert hub.publish(reply("a", "i1", "holding")) is None
    assert hub.publish(reply("a", "i1")) == (1, 0)
    assert hub.publish(reply("a", "i1")) is None, "a draft racing the deep answer is not shown twice"
    assert [r["role"] for r in await frames(q)] == ["holding", "answer"]


async def test_a_holding_line_after_the_answer_is_not_shown():
    hub = RoomHub(client_queue=8, recent_item_ids=16)
    q = hub.subscribe("a")
    hub.publish(reply("a", "i1"))
    assert hub.publish(reply("a", "i1", "holding")) is None
    assert [r["role"] for r in await frames(q)] == ["answer"]


async def test_a_full_overlay_queue_drops_its_oldest_and_keeps_order():
    hub = RoomHub(client_queue=2, recent_item_ids=16)
    q = hub.subscribe("a")
    results = [hub.publish(reply("a", f"i{n}")) for n in range(4)]
    assert results == [(1, 0), (1, 0), (0, 1), (0, 1)]
    assert [r["item_id"] for r in await frames(q)] == ["i2", "i3"]
    assert q.dropped == 2


async def test_next_frame_waits_for_a_publish():
    hub = RoomHub(client_queue=2, recent_item_ids=16)
    q = hub.subscribe("a")
    waiter = asyncio.ensure_future(q.next_frame())
    await asyncio.sleep(0)
    assert not waiter.done()
    hub.publish(reply("a", "i1"))
    assert orjson.loads(await asyncio.wait_for(waiter, 1))["reply"]["item_id"] == "i1"


def test_recent_ids_forget_the_oldest_beyond_capacity():
    ids = RecentIds(2)
    assert ids.add("x") and ids.add("y") and not ids.add("x")
    assert ids.add("z")  # evicts y (x was refreshed)
    assert ids.add("y") and not ids.add("z")


def test_unsubscribed_overlays_get_nothing():
    hub = RoomHub(client_queue=2, recent_item_ids=16)
    q = hub.subscribe("a")
    hub.unsubscribe(q)
    assert hub.publish(reply("a", "i1")) == (0, 0) and hub.clients() == 0
