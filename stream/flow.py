"""Flow control shared by the consumers: offset bookkeeping, inbox backpressure, micro-batches.

No Kafka here: partitions are plain hashable keys and items are whatever the caller queues.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class OffsetLedger:
    """Which offsets may be committed: only those below the first one not yet finished.

    A record is `track`ed when it is read and `finish`ed once its output (reply,
    escalation or dead letter) is acknowledged by the broker. Records finish out of order
    (a dead letter may be acked before an earlier item's reply); the commit point only
    moves over a contiguous run of finished offsets, so a crash never skips an item.
    """

    def __init__(self) -> None:
        self._pending: dict[Hashable, deque[int]] = {}
        self._finished: dict[Hashable, set[int]] = {}
        self._commit_point: dict[Hashable, int] = {}
        self._committed: dict[Hashable, int] = {}

    def track(self, partition: Hashable, offset: int) -> None:
        self._pending.setdefault(partition, deque()).append(offset)
        self._finished.setdefault(partition, set())

    def finish(self, partition: Hashable, offset: int) -> None:
        pending = self._pending.get(partition)
        if pending is None:
            return  # the partition was revoked meanwhile; its new owner redoes the item
        finished = self._finished[partition]
        finished.add(offset)
        while pending and pending[0] in finished:
            done = pending.popleft()
            finished.discard(done)
            self._commit_point[partition] = done + 1

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[Hashable, int]:
        """Commit points that moved since they were last committed (Kafka's "next offset")."""
        return {
            partition: point
            for partition, point in self._commit_point.items()
            if self._committed.get(partition) != point
        }

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        for partition in partitions:
            for table in (self._pending, self._finished, self._commit_point, self._committed):
                table.pop(partition, None)


class Backpressure:
    """Pause above the high watermark, resume at or below the low one (hysteresis)."""

    def __init__(self, high: int, low: int) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low ({low}) < high ({high})")
        self.high, self.low = high, low
        self.paused = False

    def update(self, depth: int) -> str | None:
        """'pause' or 'resume' when the state changes at this depth, else None."""
        if not self.paused and depth >= self.high:
            self.paused = True
            return "pause"
        if self.paused and depth <= self.low:
            self.paused = False
            return "resume"
        return None


class MicroBatcher(Generic[T]):
    """Collect up to `max_size` items, waiting at most `max_wait_s` after the first one.

    The inbox is bounded by the caller's backpressure (partitions are paused before it
    grows past its high watermark plus one poll), so `put_nowait` never has to block the
    poll loop, and the poll loop never stops polling.
    """

    def __init__(self, max_size: int, max_wait_s: float) -> None:
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[T] = asyncio.Queue()

    def put_nowait(self, item: T) -> None:
        self._queue.put_nowait(item)

    def depth(self) -> int:
        return self._queue.qsize()

    def drain(self, keep: Callable[[T], bool] = lambda item: False) -> list[T]:
        """Remove queued items not kept (e.g. those of revoked partitions); returns removed."""
        kept, removed = [], []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            (kept if keep(item) else removed).append(item)
        for item in kept:
            self._queue.put_nowait(item)
        return removed

    async def next_batch(self) -> list[T]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                while len(batch) < self.max_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch


class RecentIds:
    """The last `capacity` ids seen, to drop duplicates without growing forever."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, value: str) -> bool:
        """True when `value` is new."""
        if value in self._ids:
            self._ids.move_to_end(value)
            return False
        self._ids[value] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, value: object) -> bool:
        return value in self._ids
