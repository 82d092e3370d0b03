"""Escalations waiting on the deep tier (and drawing requests on the draw tier), as the fast tier sees them.

The fast tier remembers each item it escalated with its deadline and its draft reply. An
answer for the item on the replies topic settles it (a deep answer in time is a success
for the circuit breaker, anything else a failure); a deadline that passes with no answer
means the deep tier is down or lagging, so the fast tier sends the draft itself. Bounded:
past `capacity` waiting items the caller stops escalating (`full`).

This memory is rebuilt from Kafka, not trusted to one process: a worker that is given a
partition reads `items.deep` and `replies` back over the last max-age-plus-deadline and
takes over the escalations of that partition's items that have no answer yet
(`still_owed`), so a crashed or revoked worker's escalations still get their one answer.
Drawing requests read back from `items.draw` are kept the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from stream.contracts import DrawRequest, Escalation

T = TypeVar("T")
Handed = TypeVar("Handed", Escalation, DrawRequest)  # an item handed to another tier, with its source


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

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._waiting

    def drop(self, which: Callable[[T], bool]) -> int:
        """Forget the waiting items whose draft `which` selects (e.g. another worker owns them now)."""
        gone = [item_id for item_id, waiting in self._waiting.items() if which(waiting.draft)]
        for item_id in gone:
            del self._waiting[item_id]
        return len(gone)

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


def still_owed(escalations: Iterable[Handed], answered: Container[str],
               owned: Container[tuple[str, int]]) -> list[Handed]:
    """The escalations read back from `items.deep` (or drawing requests from `items.draw`) that
    still owe their fan an answer.

    Kept: those whose item came from a partition in `owned` (topic, partition) and has no
    answer in `answered`; the last escalation of an item wins (an item redone after a crash
    may have been escalated twice).
    """
    latest: dict[str, Handed] = {}
    for escalation in escalations:
        item_id = escalation.item.item_id
        if (escalation.source.topic, escalation.source.partition) in owned and item_id not in answered:
            latest[item_id] = escalation
    return list(latest.values())
