"""Where a tier's records go: one small object that produces them and counts them.

Every method returns the producer's delivery future; the record that caused it is
acknowledged to the Checkpoint only once that future resolves.

Every reply passes the moderation screen (`stream.moderation.gate.ReplyScreen`) here, the
one place replies are produced: a blocked line is replaced by a persona line, a line (or
an item) held for review goes to `replies.held`, and the verdicts go to `moderation`.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from stream.contracts import (
    DrawRequest, Escalation, ModerationRecord, Reasoning, Reply, Source, Submission, dead_letter_for,
    undecodable_dead_letter, utcnow,
)
from stream.errors import ReasonCode, RejectedItem
from stream.kafka_io import UndecodableRange
from consumers.moderation import count
from stream.metrics import WorkerMetrics
from stream.moderation.gate import ReplyScreen
from stream.replies import shed_record
from stream.reasons import ShedReason
from stream.topics import TopicNames

log = logging.getLogger("idolstream.outputs")


def source_of(record: ConsumerRecord) -> Source:
    key = record.key.decode(errors="replace") if record.key else None
    return Source(topic=record.topic, partition=record.partition, offset=record.offset, key=key)


class Outputs:
    def __init__(
        self, producer: AIOKafkaProducer, topics: TopicNames, metrics: WorkerMetrics, dlq_max_original_bytes: int,
        screen: ReplyScreen | None = None,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.metrics = metrics
        self.dlq_max_original_bytes = dlq_max_original_bytes
        self.screen = screen

    async def reply(self, reply: Reply, *, held_by: tuple[ModerationRecord, ...] = (), fan_text: str | None = None,
                    picture: str | None = None) -> asyncio.Future:
        """Screen and produce a reply; `held_by`: verdicts that hold its item for review (it is held too)."""
        if self.screen is None:
            return await self._send_reply(reply)
        screened = self.screen.screen(reply, utcnow(), held_by=held_by, fan_text=fan_text, picture=picture)
        count(self.metrics, screened.records)
        sends = [await self.moderation(record, counted=True) for record in screened.records]
        if screened.held is not None:
            held = screened.held
            log.info("reply %s to %s held for review: %s", held.reply.reply_id, held.reply.item_id,
                     ", ".join(f"{r.stage} {r.action}" for r in held.why))
            self.metrics.replies_held.inc()
            sends.append(await self.producer.send(self.topics.replies_held, held.to_json(), key=reply.room.encode()))
        if screened.send is not None:
            sends.append(await self._send_reply(screened.send))
        return asyncio.gather(*sends) if len(sends) > 1 else sends[0]

    async def moderation(self, record: ModerationRecord, counted: bool = False) -> asyncio.Future:
        """A verdict that stopped or held something, on the moderation topic (counted unless it was)."""
        if not counted:
            count(self.metrics, [record])
        return await self.producer.send(self.topics.moderation, record.to_json(), key=record.room.encode())

    async def _send_reply(self, reply: Reply) -> asyncio.Future:
        delivery = await self.producer.send(self.topics.replies, reply.to_json(), key=reply.room.encode())
        self.metrics.replies.labels(reply.tier, reply.role, reply.route_reason.value).inc()
        if reply.degraded is not None:
            self.metrics.degraded.labels(reply.degraded.value).inc()
        if reply.role == "answer":
            elapsed = (reply.timings.replied_at - reply.timings.item_created_at).total_seconds()
            self.metrics.end_to_end_seconds.labels(reply.tier).observe(max(0.0, elapsed))
            timings = reply.timings
            for stage, ms in (("queue", timings.queue_ms), ("admission", timings.admission_ms),
                              ("preprocess", timings.preprocess_ms), ("inference", timings.inference_ms)):
                self.metrics.stage_seconds.labels(reply.tier, stage).observe(ms / 1000)
        return delivery

    async def escalate(self, escalation: Escalation) -> asyncio.Future:
        self.metrics.escalations.labels(escalation.reason.value).inc()
        room = escalation.item.room.encode()
        return await self.producer.send(self.topics.items_deep, escalation.to_json(), key=room)

    async def draw(self, request: DrawRequest) -> asyncio.Future:
        self.metrics.draw_requests.labels(request.reason.value, request.mode).inc()
        return await self.producer.send(self.topics.items_draw, request.to_json(), key=request.item.room.encode())

    async def shed(self, record: ConsumerRecord, submission: Submission, reason: ShedReason, age_s: float):
        self.metrics.shed.labels(reason.value).inc()
        shed = shed_record(submission, reason, age_s, source_of(record))
        return await self.producer.send(self.topics.shed, shed.to_json(), key=submission.room.encode())

    async def reasoning(self, reasoning: Reasoning) -> asyncio.Future:
        return await self.producer.send(self.topics.reasoning, reasoning.to_json(), key=reasoning.room.encode())

    async def dead_letter(
        self, record: ConsumerRecord, error: RejectedItem, item_id: str | None, room: str | None
    ) -> asyncio.Future:
        source = source_of(record)
        letter = dead_letter_for(
            record.value or b"",
            error.reason,
            error.detail,
            source,
            max_original_bytes=self.dlq_max_original_bytes,
            item_id=item_id,
            room=room or source.key,
        )
        log.info("dead letter %s at %s[%d]@%d: %s", error.reason, record.topic, record.partition, record.offset, error.detail)
        self.metrics.dead_letters.labels(error.reason.value).inc()
        key = (room or source.key or "").encode() or None
        return await self.producer.send(self.topics.dlq, letter.to_json(), key=key)

    async def undecodable(self, skipped: UndecodableRange) -> asyncio.Future:
        """A dead letter for offsets nobody could decode: where they were and why, no bytes."""
        tp = skipped.partition
        source = Source(topic=tp.topic, partition=tp.partition, offset=skipped.first)
        detail = (f"record batch at offsets {skipped.first}..{skipped.last} could not be decoded and was "
                  f"skipped: {skipped.error}")
        letter = undecodable_dead_letter(source, skipped.last, detail)
        log.warning("dead letter %s at %s[%d]@%d..%d: %s", ReasonCode.UNDECODABLE_BATCH, tp.topic, tp.partition,
                    skipped.first, skipped.last, skipped.error)
        self.metrics.dead_letters.labels(ReasonCode.UNDECODABLE_BATCH.value).inc()
        return await self.producer.send(self.topics.dlq, letter.to_json())
