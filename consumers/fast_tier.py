"""The fast tier: fan items from Kafka, answered by the fast model in micro-batches.

Three loops share one event loop:
- poll: keeps calling getmany (so the group never thinks we died, however long the model
  takes), queues records, and pauses every partition while the inbox is over its high
  watermark;
- work: takes micro-batches, admits images and runs the model in a worker thread, produces
  a reply or a dead letter per item and acknowledges it to the Checkpoint;
- commit: commits what the Checkpoint allows, every `commit_interval_s`.
On stop: polling stops, the batch in the model finishes, queued items are handed back
(their offsets are not committed), finished offsets are committed, the consumer closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from stream.contracts import Reply, Source, Submission, Timings, dead_letter_for, decode_submission, new_id, utcnow
from stream.errors import ModelFailure, RejectedItem
from stream.flow import Backpressure, MicroBatcher
from stream.images import admit_image, decode_base64_image
from stream.kafka_io import Checkpoint
from stream.metrics import FastTierMetrics
from stream.models.runtime import GenerationRequest, GenerationResult, ModelRunner
from stream.persona import Persona, build_messages, read_reply
from stream.routing import RouteReason
from stream.settings import FastTierSettings

log = logging.getLogger("idolstream.fast_tier")
POLL_MAX_RECORDS = 16


@dataclass
class Received:
    record: ConsumerRecord
    at: float  # monotonic, for queue time


@dataclass
class Prepared:
    received: Received
    submission: Submission
    request: GenerationRequest
    admission_ms: float


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, tier: FastTier) -> None:
        self.tier = tier

    async def on_partitions_revoked(self, revoked) -> None:
        await self.tier.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        self.tier.partitions_assigned(set(assigned))


class FastTier:
    def __init__(
        self,
        settings: FastTierSettings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        runner: ModelRunner,
        persona: Persona,
        metrics: FastTierMetrics,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.runner = runner
        self.persona = persona
        self.metrics = metrics
        self.topics = settings.topics
        self.checkpoint = Checkpoint(consumer)
        self.inbox: MicroBatcher[Received] = MicroBatcher(
            settings.batch_max_size, settings.batch_max_wait_ms / 1000
        )
        self.backpressure = Backpressure(settings.inbox_high_watermark, settings.inbox_low_watermark)
        self.image_limits = settings.image_limits(runner.spec.max_pixels)
        self._stopping = asyncio.Event()
        self._in_flight: asyncio.Future | None = None

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self.consumer.subscribe(list(self.topics.submissions), listener=_Rebalance(self))
        poll = asyncio.create_task(self._poll_loop(), name="fast-poll")
        work = asyncio.create_task(self._work_loop(), name="fast-work")
        commit = asyncio.create_task(self._commit_loop(), name="fast-commit")
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({poll, work, commit, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                task.result()  # a loop that ended on its own failed: surface why
        finally:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
            # The batch in the model finishes and is acknowledged; queued items are handed back.
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
                log.warning("final commit failed; unacknowledged items will be answered again", exc_info=True)

    # -- rebalance --------------------------------------------------------------------

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.checkpoint.commit()
        except Exception:
            log.warning("commit on revoke failed; the new owner redoes those items", exc_info=True)
        self.inbox.drain(keep=lambda r: TopicPartition(r.record.topic, r.record.partition) not in revoked)
        self.checkpoint.forget(revoked)

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.backpressure.paused and assigned:
            self.consumer.pause(*assigned)

    # -- loops ------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=POLL_MAX_RECORDS)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    self.checkpoint.track(record)
                    self.metrics.items_consumed.labels(record.topic).inc()
                    self.inbox.put_nowait(Received(record, now))
            self._apply_backpressure()

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
            await asyncio.sleep(self.settings.commit_interval_s)  # a period, not a readiness guess
            await self.checkpoint.commit()

    async def _work_loop(self) -> None:
        while True:
            batch = await self.inbox.next_batch()
            self._apply_backpressure()
            # Shielded: a stop lets the batch already in the model finish and be acknowledged.
            self._in_flight = asyncio.ensure_future(self._answer(batch))
            await asyncio.shield(self._in_flight)

    # -- one batch --------------------------------------------------------------------

    async def _answer(self, batch: list[Received]) -> None:
        started = time.monotonic()
        prepared, rejected = await asyncio.to_thread(self._prepare, batch)
        deliveries = [await self._dead_letter(received, error, submission) for received, error, submission in rejected]
        if prepared:
            results, inference_s = await self._generate(prepared)
            for item, result in zip(prepared, results):
                if isinstance(result, ModelFailure):
                    deliveries.append(await self._dead_letter(item.received, result, item.submission))
                else:
                    deliveries.append(await self._reply(item, result, started, inference_s))
        await asyncio.gather(*(self.checkpoint.acknowledge(r.record, d) for r, d in deliveries))

    def _prepare(self, batch: list[Received]) -> tuple[list[Prepared], list[tuple[Received, RejectedItem, Submission | None]]]:
        prepared, rejected = [], []
        for received in batch:
            submission = None
            t0 = time.perf_counter()
            try:
                submission = decode_submission(received.record.value or b"")
                admitted = admit_image(decode_base64_image(submission.image.data), self.image_limits)
            except RejectedItem as error:
                rejected.append((received, error, submission))
                continue
            request = GenerationRequest(messages=build_messages(self.persona, submission), images=[admitted.image])
            prepared.append(Prepared(received, submission, request, (time.perf_counter() - t0) * 1000))
        return prepared, rejected

    async def _generate(self, prepared: list[Prepared]) -> tuple[list[GenerationResult | ModelFailure], float]:
        """Run the batch; if it fails, run its items one by one so one bad item fails alone."""
        self.metrics.batch_size.observe(len(prepared))
        t0 = time.perf_counter()
        try:
            results: list = await asyncio.to_thread(self.runner.generate, [p.request for p in prepared])
        except Exception:
            log.warning("batch of %d failed; retrying item by item", len(prepared), exc_info=True)
            results = []
            for item in prepared:
                try:
                    results.extend(await asyncio.to_thread(self.runner.generate, [item.request]))
                except Exception as exc:
                    results.append(ModelFailure(f"{type(exc).__name__}: {exc}"[:500]))
        elapsed = time.perf_counter() - t0
        self.metrics.inference_seconds.observe(elapsed)
        return results, elapsed

    async def _reply(self, item: Prepared, result: GenerationResult, started: float, inference_s: float):
        sub = item.submission
        read = read_reply(result.text, self.persona, sub.item_id)
        text, cue, used_fallback = read.text, read.cue, read.used_fallback
        self.metrics.generated_tokens.inc(result.generated_tokens)
        replied_at = utcnow()
        reply = Reply(
            reply_id=new_id(),
            item_id=sub.item_id,
            room=sub.room,
            tier="fallback" if used_fallback else "fast",
            route_reason=RouteReason.SIMPLE,
            model_id=self.runner.spec.id,
            text=text,
            cue=cue,
            timings=Timings(
                item_created_at=sub.created_at,
                queue_ms=max(0.0, (started - item.received.at) * 1000),
                admission_ms=item.admission_ms,
                inference_ms=inference_s * 1000,
                replied_at=replied_at,
            ),
            in_reply_to=sub.user,
        )
        delivery = await self.producer.send(self.topics.replies, reply.to_json(), key=sub.room.encode())
        self.metrics.replies.labels(reply.tier).inc()
        self.metrics.end_to_end_seconds.observe(max(0.0, (replied_at - sub.created_at).total_seconds()))
        return item.received, delivery

    async def _dead_letter(self, received: Received, error: RejectedItem, submission: Submission | None):
        record = received.record
        key = record.key.decode(errors="replace") if record.key else None
        letter = dead_letter_for(
            record.value or b"",
            error.reason,
            error.detail,
            Source(topic=record.topic, partition=record.partition, offset=record.offset, key=key),
            max_original_bytes=self.settings.dlq_max_original_bytes,
            item_id=submission.item_id if submission else None,
            room=submission.room if submission else key,
        )
        log.info("dead letter %s at %s[%d]@%d: %s", error.reason, record.topic, record.partition, record.offset, error.detail)
        self.metrics.dead_letters.labels(error.reason.value).inc()
        delivery = await self.producer.send(self.topics.dlq, letter.to_json(), key=(key or "").encode() or None)
        return received, delivery

