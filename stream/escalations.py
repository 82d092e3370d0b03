"""Escalations waiting on the deep tier, as the fast tier sees them.

The fast tier remembers each item it escalated with its deadline and its draft reply. An
answer for the item on the replies topic settles it (a deep answer in time is a success
for the circuit breaker, anything else a failure); a deadline that passes with no answer
means the deep tier is down or lagging, so the fast tier sends the draft itself. Bounded:
past `capacity` waiting items the caller stops escalating (`full`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Waiting(Generic[T]):
    item_id: str
    deadline: float  # monotonic seconds
    draft: T


class PendingEscalations(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._waiting: dict[str, Waiting[T]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def full(self) -> bool:
        return len(self._waiting) >= self.capacity

    def add(self, item_id: str, deadline: float, draft: T) -> None:
        self._waiting[item_id] = Waiting(item_id, deadline, draft)

    def settle(self, item_id: str) -> Waiting[T] | None:
        """The item got its answer: forget it; None when it was not waiting here."""
        return self._waiting.pop(item_id, None)

    def expired(self, now: float) -> list[Waiting[T]]:
        """Items past their deadline, removed and returned (earliest deadline first)."""
        late = sorted((w for w in self._waiting.values() if w.deadline <= now), key=lambda w: w.deadline)
        for waiting in late:
            del self._waiting[waiting.item_id]
        return late

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self._waiting.values()), default=None)
