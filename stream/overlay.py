"""Overlay fan-out without sockets: which overlay gets which reply, once, in order, paced.

Every reply has a `Cursor`: the partition and offset of its record on the replies topic.
Replies are keyed by room, so one room's replies are one partition's order, and every
gateway instance (or a restarted one) gives a reply the same cursor. An overlay that
reconnects names the last cursor it saw and gets exactly what came after, from the
room's bounded `RoomHistory`.

`RoomHub` keeps, per room, the subscribed overlays, the history and the item ids already
answered: an item's first answer is shown and any later one dropped (a redelivered item,
or a draft racing a deep answer); a holding line is shown only before anything else for
its item. Each overlay has a bounded queue; when an overlay does not keep up, its oldest
waiting reply is dropped and counted, so one stuck browser never holds back the others.
Pacing: after a reply is sent, the overlay's next one waits until the overlay acks that
the bubble has finished, or a timeout passes.

A retracted reply (fans reported it, or an operator took it back) leaves its room's
history, so no resume replays it; an overlay that still has it waiting drops it unseen,
and every other overlay of the room gets a ``retract`` notice to take the bubble down.
Notices go out ahead of replies and do not wait for pacing. Retractions and replies come
on different topics and may race: each room remembers its last retracted reply ids, and
a reply that arrives after its retraction is never shown.

Rooms come and go over a gateway's life, so a room nobody watches is not kept for ever:
one that never had a reply goes with its last overlay, and one that has been quiet and
unwatched for `quiet_room_s` (the window a restarted gateway rebuilds) is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from stream.flow import RecentIds


# A resuming overlay may still show a bubble retracted while it was away: it is told again
# about the room's last few retractions (a fresh overlay shows nothing yet and is not).
RESUME_NOTICES = 8
# One room's history may hold at most 1/ROOM_SHARE of all histories' byte budget.
ROOM_SHARE = 2


@dataclass(frozen=True, order=True)
class Cursor:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}-{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """`"3-1207"` → Cursor(3, 1207); ValueError for anything else."""
        partition, sep, offset = text.partition("-")
        if not sep or not partition.isdigit() or not offset.isdigit() or len(text) > 40:
            raise ValueError(f"not a reply cursor: {text[:40]!r}")
        return cls(int(partition), int(offset))

    def covers(self, other: Cursor) -> bool:
        """True when `other` is this cursor or comes before it in the same room."""
        return other.partition == self.partition and other.offset <= self.offset


@dataclass(frozen=True)
class Entry:
    """One reply as the overlays get it: its cursor and its encoded frame."""

    cursor: Cursor
    reply_id: str
    frame: bytes
    tier: str = ""
    item_created: float | None = None  # epoch seconds, from the reply's timings
    at: float = field(default_factory=time.monotonic)  # when the gateway read it


def reply_entry(cursor: Cursor, reply: dict) -> Entry:
    # orjson hands back its write buffer without shrinking it (about 8 KiB for a 600-byte
    # frame, measured with orjson 3.13); histories keep frames for long, so keep an exact copy.
    frame = bytes(memoryview(orjson.dumps({"type": "reply", "cursor": str(cursor), "reply": reply})))
    created = reply.get("timings", {}).get("item_created_at")
    item_created = datetime.fromisoformat(created).timestamp() if isinstance(created, str) else None
    return Entry(cursor, reply["reply_id"], frame, reply.get("tier", ""), item_created)


@dataclass(frozen=True)
class Resume:
    """What a reconnecting overlay got back: how many replies, and whether that is all it missed."""

    replayed: int
    complete: bool


class RoomHistory:
    """The last `capacity` replies of one room, for overlays that reconnect, within `max_bytes`
    of frames (a frame is counted whole, a picture it carries included); the newest reply is
    kept whatever its size."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self._entries: deque[Entry] = deque()
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self.forgotten: Cursor | None = None  # the newest entry pushed out of the window

    def append(self, entry: Entry) -> int:
        """Keep `entry`; the change in bytes held (old entries may make way)."""
        before = self.bytes
        self._entries.append(entry)
        self.bytes += len(entry.frame)
        if len(self._entries) > self.capacity:
            self.trim_one()
        while self.max_bytes is not None and self.bytes > self.max_bytes and len(self._entries) > 1:
            self.trim_one()
        return self.bytes - before

    def trim_one(self) -> int:
        """Forget the oldest entry; the bytes freed."""
        oldest = self._entries.popleft()
        self.forgotten = oldest.cursor
        self.bytes -= len(oldest.frame)
        return len(oldest.frame)

    def newest(self) -> Cursor | None:
        """The cursor of the newest reply this history has held, kept or forgotten."""
        return self._entries[-1].cursor if self._entries else self.forgotten

    def remove(self, reply_id: str) -> int:
        """Take a reply out (retracted); the bytes freed, 0 when it is not here.

        Resumes stay complete: what was removed was taken back, not lost.
        """
        for entry in self._entries:
            if entry.reply_id == reply_id:
                self._entries.remove(entry)
                self.bytes -= len(entry.frame)
                return len(entry.frame)
        return 0

    def after(self, cursor: Cursor) -> tuple[list[Entry], bool]:
        """The entries after `cursor`, and False when some that came after it were forgotten."""
        if self._entries and self._entries[-1].cursor.partition != cursor.partition:
            return list(self._entries), False  # the room moved partition (topic resized): best effort
        entries = [e for e in self._entries if not cursor.covers(e.cursor)]
        complete = self.forgotten is None or cursor.covers(self.forgotten)
        return entries, complete

    def __len__(self) -> int:
        return len(self._entries)


class OverlayQueue:
    """One overlay's bounded queue of entries (full: drop the oldest), its notices and its pacing state.

    Notices (a retraction) go out before any entry and while an entry waits for its ack.
    They are bounded too: past `capacity` waiting, the oldest goes; only an overlay that
    reads nothing lets them pile up, and its bubbles are long gone by then.
    """

    def __init__(self, room: str, capacity: int, seen: Cursor | None = None) -> None:
        self.room = room
        self.capacity = capacity
        self.dropped = 0
        self.seen = seen  # entries at or before this cursor were shown already (resume)
        self._entries: deque[Entry] = deque()
        self._notices: deque[bytes] = deque(maxlen=capacity)
        self._ready = asyncio.Event()  # something to send: an entry or a notice
        self._in_flight: Entry | None = None
        self._acked = True  # no entry is waiting for its ack
        self._woken = asyncio.Event()  # an ack, or a notice, while an entry waits for its ack

    def offer(self, entry: Entry) -> bool:
        """Queue an entry; False when an older one had to be dropped to make room."""
        if self.seen is not None and self.seen.covers(entry.cursor):
            return True  # a gateway behind the one the overlay came from: already shown
        dropped = len(self._entries) >= self.capacity
        if dropped:
            self._entries.popleft()
            self.dropped += 1
        self._entries.append(entry)
        self._ready.set()
        return not dropped

    def retract(self, reply_id: str, notice: bytes) -> bool:
        """A reply was retracted: True when it was still waiting here (dropped, never shown);
        otherwise `notice` is queued for the overlay, and an ack it owed for it is not awaited."""
        for entry in self._entries:
            if entry.reply_id == reply_id:
                self._entries.remove(entry)
                return True
        self._notices.append(notice)
        self._ready.set()
        if self._in_flight is not None and self._in_flight.reply_id == reply_id:
            self.release()  # its bubble goes now: the next reply need not wait for it
        else:
            self._woken.set()
        return False

    def take_notices(self) -> list[bytes]:
        """The notices waiting, oldest first; the queue forgets them."""
        notices = list(self._notices)
        self._notices.clear()
        return notices

    async def next_out(self) -> Entry | bytes:
        """The next thing to send: a notice first, else the next entry (cancel-safe: nothing
        is taken until one is there)."""
        while not self._entries and not self._notices:
            self._ready.clear()
            await self._ready.wait()
        if self._notices:
            return self._notices.popleft()
        entry = self._entries.popleft()
        self.seen = entry.cursor
        return entry

    def sent(self, entry: Entry) -> None:
        self._in_flight = entry
        self._acked = False

    def ack(self, cursor: str | None = None, reply_id: str | None = None) -> bool:
        """The overlay finished showing a reply; True when it was the one being waited for."""
        entry = self._in_flight
        if entry is None or (cursor != str(entry.cursor) and reply_id != entry.reply_id):
            return False
        self.release()
        return True

    def release(self) -> None:
        """Stop waiting for an ack (acked, retracted, or the overlay went away)."""
        self._in_flight = None
        self._acked = True
        self._woken.set()

    async def wait_ack(self, timeout_s: float) -> bool:
        """Wait for the ack of the entry last `sent`: True once it came. False when `timeout_s`
        passed first, or at once while a notice waits (send it, then wait again)."""
        self._woken.clear()
        if not self._acked and not self._notices:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout_s)
        return self._acked

    def give_up(self) -> None:
        """Stop expecting the ack of the entry last `sent`: a late one changes nothing."""
        self._in_flight = None

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class _Room:
    history: RoomHistory
    answered: RecentIds
    active_at: float  # clock time of its last reply, retraction, subscribe or unsubscribe
    overlays: set[OverlayQueue] = field(default_factory=set)
    # Made at the room's first retraction (most rooms never have one): the reply ids taken
    # back, and the last few of them in order, for overlays that resume.
    retracted: RecentIds | None = None
    latest_retracted: deque[str] | None = None

    def holds_nothing(self) -> bool:
        return self.history.newest() is None and self.retracted is None


@dataclass(frozen=True)
class Published:
    delivered: int
    dropped: int
    retracted: bool = False  # retracted before it came: kept from the history and every overlay


@dataclass(frozen=True)
class Retracted:
    """What a retraction did: taken out of the room's history, dropped from overlays' queues
    before they showed it, and notices to overlays that may be showing it."""

    from_history: bool
    unqueued: int
    notified: int


def retract_notice(room: str, reply_id: str) -> bytes:
    return orjson.dumps({"type": "retract", "reply_id": reply_id, "room": room})


class RoomHub:
    """Rooms, their overlays and histories, within `max_rooms` and `history_max_bytes`.

    One room's history holds at most `room_max_bytes` (half the budget unless told), its
    oldest replies making way: a room flooded with pictures she drew keeps its newest ones
    and cannot push every other room's history out.

    Past either bound, the least recently active rooms without an overlay are forgotten;
    when every room has one, the oldest history entries go instead. Either way a resume
    from before then is reported incomplete. A room history is complete only from where
    this gateway began reading (`start_at`): what came before it never saw.

    Within the bounds, rooms without an overlay are forgotten once quiet for `quiet_room_s`
    (`forget_quiet_rooms`; None keeps them until a bound is reached), and a room that never
    had a reply goes with its last overlay, so overlays coming and going leave nothing behind.
    """

    def __init__(self, client_queue: int, recent_item_ids: int, history_per_room: int, max_rooms: int = 2000,
                 history_max_bytes: int = 256 * 2**20, quiet_room_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, recent_retractions: int | None = None,
                 room_max_bytes: int | None = None) -> None:
        self.client_queue = client_queue
        self.recent_item_ids = recent_item_ids
        self.recent_retractions = recent_retractions or recent_item_ids
        self.history_per_room = history_per_room
        self.max_rooms = max_rooms
        self.history_max_bytes = history_max_bytes
        self.room_max_bytes = room_max_bytes or history_max_bytes // ROOM_SHARE
        self.quiet_room_s = quiet_room_s
        self._clock = clock
        self._rooms: OrderedDict[str, _Room] = OrderedDict()  # least recently active first
        self._position: dict[int, int] = {}  # per partition: the next offset to read
        self._floor: dict[int, int] = {}  # per partition: histories are complete from this offset on
        self._bytes = 0
        self._clients = 0
        self._active_rooms = 0

    def start_at(self, partition: int, offset: int) -> None:
        """This gateway reads `partition` from `offset` on."""
        self._position[partition] = self._floor[partition] = offset

    def advance(self, cursor: Cursor) -> None:
        """A record was read (a reply or not)."""
        self._position[cursor.partition] = cursor.offset + 1

    def _room(self, room: str) -> _Room:
        now = self._clock()
        state = self._rooms.get(room)
        if state is None:
            history = RoomHistory(self.history_per_room, self.room_max_bytes)
            state = self._rooms[room] = _Room(history, RecentIds(self.recent_item_ids), now)
        state.active_at = now
        self._rooms.move_to_end(room)
        return state

    def _forget(self, room: str) -> None:
        """Drop a room; a resume from before its newest reply is reported incomplete from now on."""
        state = self._rooms.pop(room)
        self._bytes -= state.history.bytes
        if (newest := state.history.newest()) is not None:
            self._floor[newest.partition] = max(self._floor.get(newest.partition, 0), newest.offset + 1)

    def forget_quiet_rooms(self) -> int:
        """Forget the rooms without an overlay that were quiet for `quiet_room_s`; how many.

        Costs one step per room forgotten or watched ahead of the first recently active one.
        """
        if self.quiet_room_s is None:
            return 0
        cutoff = self._clock() - self.quiet_room_s
        quiet = []
        for name, state in self._rooms.items():
            if state.active_at > cutoff:
                break  # the rest were active more recently
            if not state.overlays:
                quiet.append(name)
        for name in quiet:
            self._forget(name)
        return len(quiet)

    def _within_bounds(self) -> bool:
        return len(self._rooms) <= self.max_rooms and self._bytes <= self.history_max_bytes

    def _fit(self, keep: str) -> None:
        if self._within_bounds():
            return
        for name in [n for n, state in self._rooms.items() if not state.overlays and n != keep]:
            self._forget(name)
            self._floor.update(self._position)  # its history is gone: earlier resumes are incomplete
            if self._within_bounds():
                return
        for state in list(self._rooms.values()):  # every room left has overlays: trim, oldest activity first
            while self._bytes > self.history_max_bytes and len(state.history):
                self._bytes -= state.history.trim_one()

    def subscribe(self, room: str, after: Cursor | None = None) -> tuple[OverlayQueue, Resume]:
        """A new overlay of `room`; with `after`, it first gets what the room said since then."""
        state = self._room(room)
        self._fit(keep=room)
        queue = OverlayQueue(room, self.client_queue, seen=after)
        resume = Resume(0, True)
        if after is not None:
            entries, complete = state.history.after(after)
            complete = complete and after.offset + 1 >= self._floor.get(after.partition, 0)
            for entry in entries[-self.client_queue:]:
                queue.offer(entry)
            for reply_id in state.latest_retracted or ():
                queue.retract(reply_id, retract_notice(room, reply_id))
            resume = Resume(min(len(entries), self.client_queue), complete and len(entries) <= self.client_queue)
        if not state.overlays:
            self._active_rooms += 1
        state.overlays.add(queue)
        self._clients += 1
        return queue, resume

    def unsubscribe(self, queue: OverlayQueue) -> None:
        state = self._rooms.get(queue.room)
        if state is not None and queue in state.overlays:
            state.overlays.discard(queue)
            self._clients -= 1
            if not state.overlays:
                self._active_rooms -= 1
                if state.holds_nothing():  # never had a reply or a retraction: nothing to keep
                    self._forget(queue.room)
                else:  # kept for overlays that come back, quiet_room_s from now
                    self._room(queue.room)

    def clients(self, room: str | None = None) -> int:
        """Connected overlays, of one room or of all."""
        if room is None:
            return self._clients
        state = self._rooms.get(room)
        return len(state.overlays) if state is not None else 0

    def rooms(self) -> int:
        """Rooms with at least one overlay connected."""
        return self._active_rooms

    def rooms_held(self) -> int:
        """Rooms remembered, watched or not."""
        return len(self._rooms)

    def history_bytes(self) -> int:
        return self._bytes

    def publish(self, cursor: Cursor, reply: dict) -> Published | None:
        """Record a reply and offer it to its room's overlays; None for a duplicate."""
        state = self._room(reply["room"])
        item_id = reply["item_id"]
        if reply.get("role", "answer") == "holding":
            if item_id in state.answered or not state.answered.add(f"{item_id}\0holding"):
                return None
        elif not state.answered.add(item_id):
            return None
        if state.retracted is not None and reply["reply_id"] in state.retracted:  # its item stays answered
            return Published(0, 0, retracted=True)
        entry = reply_entry(cursor, reply)
        self._bytes += state.history.append(entry)
        self._fit(keep=reply["room"])
        delivered = dropped = 0
        for queue in state.overlays:
            if queue.offer(entry):
                delivered += 1
            else:
                dropped += 1
        return Published(delivered, dropped)

    def retract(self, room: str, reply_id: str) -> Retracted | None:
        """Take a reply back from `room`'s history and overlays; None when it was retracted already.

        A reply not seen yet is remembered (within `recent_retractions` per room) and never
        shown when it comes.
        """
        state = self._room(room)
        if state.retracted is None or state.latest_retracted is None:
            state.retracted, state.latest_retracted = RecentIds(self.recent_retractions), deque(maxlen=RESUME_NOTICES)
        if not state.retracted.add(reply_id):
            return None
        state.latest_retracted.append(reply_id)
        freed = state.history.remove(reply_id)
        self._bytes -= freed
        notice = retract_notice(room, reply_id)
        unqueued = sum(queue.retract(reply_id, notice) for queue in state.overlays)
        self._fit(keep=room)
        return Retracted(freed > 0, unqueued, len(state.overlays) - unqueued)
