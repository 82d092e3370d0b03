"""Live load-shedding: which items are not answered at all, and why.

Live means fresh: a reply to a minute-old picture is worse than none, one fan must not
fill a room's screen, and a room gets at most so many replies per window. `LoadShedder`
triages a batch just before it reaches the model; each shed item is counted and recorded
(for a later thank-you) by the caller. Pure: the clock is passed in, memory is bounded.

Order of the checks: duplicate item id, then age, then the fan's rate, then the room's
pace. Only items that get through count against the fan's and the room's budgets; when a
room has fewer places left than items, the higher `priority` wins (ties: arrival order).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from stream.flow import RecentIds
from stream.reasons import ShedReason


@dataclass(frozen=True)
class SheddingPolicy:
    max_age_s: float = 30.0
    user_max_items: int = 3  # per fan and room in `user_window_s`; 0 = no limit
    user_window_s: float = 30.0
    room_max_replies: int = 20  # per room in `room_window_s`; 0 = no limit
    room_window_s: float = 10.0
    remembered: int = 10_000  # item ids, fans and rooms kept in memory (least recent forgotten)


@dataclass(frozen=True)
class Arrival:
    item_id: str
    room: str
    user_id: str
    age_s: float
    priority: int = 0


class SlidingWindowCounter:
    """Events per key in the last `window_s` seconds, for at most `max_keys` keys."""

    def __init__(self, limit: int, window_s: float, max_keys: int) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._events: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def room_left(self, key: Hashable, now: float) -> int:
        events = self._events.get(key)
        if events is None:
            return self.limit
        while events and now - events[0] >= self.window_s:
            events.popleft()
        return max(0, self.limit - len(events))

    def record(self, key: Hashable, now: float) -> None:
        events = self._events.setdefault(key, deque())
        self._events.move_to_end(key)
        events.append(now)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)


class LoadShedder:
    def __init__(self, policy: SheddingPolicy) -> None:
        self.policy = policy
        self._seen = RecentIds(policy.remembered)
        self._users = SlidingWindowCounter(policy.user_max_items, policy.user_window_s, policy.remembered)
        self._rooms = SlidingWindowCounter(policy.room_max_replies, policy.room_window_s, policy.remembered)

    def triage(self, arrivals: Sequence[Arrival], now: float) -> list[ShedReason | None]:
        """One verdict per arrival, in order: None to answer it, else why it is shed."""
        p = self.policy
        verdicts: list[ShedReason | None] = [None] * len(arrivals)
        waiting: dict[str, list[int]] = {}
        for index, item in enumerate(arrivals):
            if not self._seen.add(item.item_id):
                verdicts[index] = ShedReason.DUPLICATE
            elif item.age_s > p.max_age_s:
                verdicts[index] = ShedReason.STALE
            elif p.user_max_items and self._users.room_left((item.room, item.user_id), now) == 0:
                verdicts[index] = ShedReason.USER_RATE_LIMITED
            else:
                if p.user_max_items:
                    self._users.record((item.room, item.user_id), now)
                waiting.setdefault(item.room, []).append(index)
        for room, indexes in waiting.items():
            if not p.room_max_replies:
                continue
            places = self._rooms.room_left(room, now)
            ranked = sorted(indexes, key=lambda i: -arrivals[i].priority)  # stable: arrival order on ties
            for rank, index in enumerate(ranked):
                if rank < places:
                    self._rooms.record(room, now)
                else:
                    verdicts[index] = ShedReason.ROOM_PACED
        return verdicts
