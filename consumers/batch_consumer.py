"""The consuming half every tier shares: poll, pause, batch, hand over, acknowledge, commit.

Three loops share one event loop:
- poll: keeps calling getmany (so the group never thinks we died, however long the model
  takes), queues records, and pauses every partition while the inbox is over its high
  watermark. A record batch that cannot be decoded (a codec missing, corrupt bytes) is
  skipped, never retried forever: its offsets are queued as an `UndecodableRange`, which
  becomes a dead letter (`undecodable_batch`) in its turn, so the partition moves on;
- work: takes micro-batches and hands each to the tier's `handle`, which returns, per
  record, what the broker must acknowledge before the record's offset may be committed
  (a reply, an escalation, a shed record, a dead letter, or several of them);
- commit: commits what the Checkpoint allows, every `commit_interval_s`.
On stop: polling stops, the batch being handled finishes and is acknowledged, queued items
are handed back (their offsets are not committed), finished offsets are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from stream.flow import Backpressure, MicroBatcher
from stream.kafka_io import Checkpoint, UndecodableRange, read_skipping_undecodable
from stream.metrics import WorkerMetrics

log = logging.getLogger("idolstream.consumer")
POLL_MAX_RECORDS = 16
LAG_EVERY_S = 1.0  # how often consumer lag is reported
REVOKE_WAIT_S = 5.0  # how long a rebalance waits for the batch in hand before handing its partitions over


@dataclass
class Received:
    record: ConsumerRecord
    at: float  # monotonic, for queue time


# What one record produced: the producer futures to await before its offset may be committed.
Outcome = tuple[ConsumerRecord, list[Awaitable]]
Handler = Callable[[list[Received]], Awaitable[list[Outcome]]]
# Produces the dead letter of skipped offsets; returns its delivery future.
SkipHandler = Callable[[UndecodableRange], Awaitable[Awaitable]]
Queued = Received | UndecodableRange


def partition_of(entry: Queued) -> TopicPartition:
    if isinstance(entry, UndecodableRange):
        return entry.partition
    return TopicPartition(entry.record.topic, entry.record.partition)


@dataclass(frozen=True)
class BatchLimits:
    batch_max_size: int
    batch_max_wait_ms: int
    inbox_high_watermark: int
    inbox_low_watermark: int
    commit_interval_s: float


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.owner.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        self.owner.partitions_assigned(set(assigned))


class BatchConsumer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Iterable[str],
        limits: BatchLimits,
        handle: Handler,
        metrics: WorkerMetrics,
        skip_undecodable: SkipHandler,
        *,
        on_assigned: Callable[[set[TopicPartition]], None] = lambda assigned: None,
        on_revoked: Callable[[set[TopicPartition]], None] = lambda revoked: None,
    ) -> None:
        self.consumer = consumer
        self.topics = list(topics)
        self.limits = limits
        self.handle = handle
        self.metrics = metrics
        self.skip_undecodable = skip_undecodable
        self.on_assigned = on_assigned  # the tier's partition-owned state follows the assignment
        self.on_revoked = on_revoked
        self.checkpoint = Checkpoint(consumer)
        self.inbox: MicroBatcher[Queued] = MicroBatcher(limits.batch_max_size, limits.batch_max_wait_ms / 1000)
        self.backpressure = Backpressure(limits.inbox_high_watermark, limits.inbox_low_watermark)
        self._stopping = asyncio.Event()
        self._in_flight: asyncio.Future | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        poll = asyncio.create_task(self._poll_loop(), name="poll")
        work = asyncio.create_task(self._work_loop(), name="work")
        commit = asyncio.create_task(self._commit_loop(), name="commit")
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({poll, work, commit, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                task.result()  # a loop that ended on its own failed: surface why
        finally:
            stop.cancel()
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            if self._in_flight is not None:
                await asyncio.gather(self._in_flight, return_exceptions=True)
            commit.cancel()
            await asyncio.gather(commit, return_exceptions=True)
            self.inbox.drain()
            try:
                await self.checkpoint.commit()
            except Exception:  # the group may be gone already; uncommitted items are redone
                log.warning("final commit failed; unacknowledged items will be handled again", exc_info=True)

    # -- rebalance --------------------------------------------------------------------

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch being handled finish first (bounded: the group waits for us), so its
        # offsets are committed here instead of its items being answered again by the next owner.
        if self._in_flight is not None and not self._in_flight.done():
            await asyncio.wait({self._in_flight}, timeout=REVOKE_WAIT_S)
        try:
            await self.checkpoint.commit()
        except Exception:
            log.warning("commit on revoke failed; the new owner redoes those items", exc_info=True)
        self.inbox.drain(keep=lambda entry: partition_of(entry) not in revoked)
        self.checkpoint.forget(revoked)
        self.on_revoked(revoked)
        for tp in revoked:  # another member reports these now
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(self.metrics.tier, tp.topic, str(tp.partition))

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.backpressure.paused and assigned:
            self.consumer.pause(*assigned)
        self.on_assigned(assigned)

    # -- loops ------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        lag_due = 0.0
        while True:
            batches = await read_skipping_undecodable(self.consumer, timeout_ms=100, max_records=POLL_MAX_RECORDS)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    if isinstance(record, UndecodableRange):
                        self.checkpoint.track_skipped(record)
                        self.inbox.put_nowait(record)
                        continue
                    self.checkpoint.track(record)
                    self.metrics.items_consumed.labels(self.metrics.tier, record.topic).inc()
                    self.inbox.put_nowait(Received(record, now))
            self._apply_backpressure()
            if now >= lag_due:
                lag_due = now + LAG_EVERY_S
                await self._report_lag()

    async def _report_lag(self) -> None:
        """Per assigned partition: the broker's high watermark minus what was fetched so far."""
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = await self.consumer.position(tp)
                lag = self.metrics.consumer_lag.labels(self.metrics.tier, tp.topic, str(tp.partition))
                lag.set(max(0, highwater - position))

    def _apply_backpressure(self) -> None:
        depth = self.inbox.depth()
        self.metrics.inbox_depth.set(depth)
        change = self.backpressure.update(depth)
        if change == "pause":
            self.consumer.pause(*self.consumer.assignment())
        elif change == "resume":
            self.consumer.resume(*self.consumer.assignment())
        self.metrics.paused.set(1 if self.backpressure.paused else 0)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.commit_interval_s)  # a period, not a readiness guess
            await self.checkpoint.commit()

    async def _work_loop(self) -> None:
        while True:
            batch = await self.inbox.next_batch()
            self._apply_backpressure()
            # Shielded: a stop lets the batch being handled finish and be acknowledged.
            self._in_flight = asyncio.ensure_future(self._handle(batch))
            await asyncio.shield(self._in_flight)

    async def _handle(self, batch: list[Queued]) -> None:
        received = [entry for entry in batch if isinstance(entry, Received)]
        skipped = [entry for entry in batch if isinstance(entry, UndecodableRange)]
        outcomes = await self.handle(received) if received else []
        letters = [await self.skip_undecodable(entry) for entry in skipped]
        await asyncio.gather(
            *(self.checkpoint.acknowledge(record, asyncio.gather(*deliveries)) for record, deliveries in outcomes),
            *(self.checkpoint.acknowledge_skipped(entry, letter) for entry, letter in zip(skipped, letters)),
        )
