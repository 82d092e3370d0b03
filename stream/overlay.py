"""Overlay fan-out without sockets: which overlay gets which reply, once, in order.

`RoomHub` keeps, per room, the set of subscribed overlays and the item ids already
answered: an item's first answer is shown and any later one dropped (a redelivered item,
or a draft racing a deep answer); a holding line is shown only before anything else for
its item. Each overlay has a bounded
queue; when an overlay does not keep up, its oldest waiting reply is dropped and counted,
so one stuck browser never holds back the others.
"""

from __future__ import annotations

import asyncio
from collections import deque

import orjson

from stream.flow import RecentIds


class OverlayQueue:
    """A bounded queue of encoded frames for one overlay; full means drop the oldest."""

    def __init__(self, room: str, capacity: int) -> None:
        self.room = room
        self.capacity = capacity
        self.dropped = 0
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; False when an older frame had to be dropped to make room."""
        dropped = len(self._frames) >= self.capacity
        if dropped:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self._ready.set()
        return not dropped

    async def next_frame(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def __len__(self) -> int:
        return len(self._frames)


class RoomHub:
    def __init__(self, client_queue: int, recent_item_ids: int) -> None:
        self.client_queue = client_queue
        self.recent_item_ids = recent_item_ids
        self._rooms: dict[str, set[OverlayQueue]] = {}
        self._answered: dict[str, RecentIds] = {}

    def subscribe(self, room: str) -> OverlayQueue:
        queue = OverlayQueue(room, self.client_queue)
        self._rooms.setdefault(room, set()).add(queue)
        return queue

    def unsubscribe(self, queue: OverlayQueue) -> None:
        members = self._rooms.get(queue.room)
        if members is not None:
            members.discard(queue)
            if not members:
                del self._rooms[queue.room]

    def clients(self) -> int:
        return sum(len(m) for m in self._rooms.values())

    def publish(self, reply: dict) -> tuple[int, int] | None:
        """Offer a reply to its room's overlays: (delivered, dropped), or None for a duplicate."""
        room, item_id = reply["room"], reply["item_id"]
        seen = self._answered.setdefault(room, RecentIds(self.recent_item_ids))
        if reply.get("role", "answer") == "holding":
            if not seen.add(f"{item_id}\0holding") or item_id in seen:
                return None
        elif not seen.add(item_id):
            return None
        frame = orjson.dumps({"type": "reply", "reply": reply})
        delivered = dropped = 0
        for queue in self._rooms.get(room, ()):
            if queue.offer(frame):
                delivered += 1
            else:
                dropped += 1
        return delivered, dropped
