"""`idolstream dataset export`: the topics read once, joined, written as a Qwen3-VL fine-tuning dataset.

Each topic is read from its start (the replies from the time `--since` names, a minute early
for clock skew) up to the end offsets it had when the export started, then the reading
stops: no consumer group, nothing committed. The small topics come first (replies, feedback,
review decisions, retractions, moderation, forget requests), so that of the pictures on the
items topics only those a pair needs are decoded and kept. The join is
`stream.learning.export`; the records are written with the same code as the demo's training
data (`producers.training_data.training_record`, `stream.learning.dataset.write_dataset`):

    OUT/data.jsonl      one record per pair; the human turn is the fast tier's prompt for the item
    OUT/images/         each item's picture, byte for byte as the fan sent it
    OUT/pairs.jsonl     where each record came from (reply, item, room, model, likes), same order

OUT is staged beside itself and renamed into place: it is never half written, and an
existing non-empty OUT is refused.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from producers.training_data import training_record
from stream.contracts import (
    MAX_CLOCK_SKEW_S,
    ModerationRecord,
    Reply,
    ReviewDecision,
    decode_feedback,
    decode_forget_request,
    decode_retraction,
    decode_submission,
    utcnow,
)
from stream.errors import IdolstreamError
from stream.kafka_io import (
    UndecodableRange,
    bootstrap_for,
    make_consumer,
    partitions_of,
    read_skipping_undecodable,
)
from stream.learning.dataset import write_dataset
from stream.learning.export import ExportError, ExportJoin, ExportResult, ExportRules, parse_since, summary_lines
from stream.persona import Persona
from stream.settings import FastTierSettings
from stream.topics import HOUR_MS, TopicNames, topic_plan

CLIENT_ID = "idolstream-dataset-export"
# A partition that yields nothing for this long before its end offset is reported, not waited on.
STALL_S = 30.0
POLL_MS = 500
POLL_RECORDS = 500


@dataclass(frozen=True)
class ExportReport:
    result: ExportResult
    out_dir: Path
    undecodable: dict[str, int]  # topic -> records skipped
    lines: list[str]  # the summary the command prints


def check_out_dir(out_dir: Path) -> None:
    """Refuse an existing, non-empty directory (or a file) before anything is read."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not empty: name a new directory for the export")


def run_export(settings: FastTierSettings, since: str, room: str | None, min_likes: int, out_dir: Path) -> list[str]:
    """What `idolstream dataset export` does: every argument checked before the broker is asked, then the export.

    The human turns are the fast tier's prompts, with the persona the tiers read (`persona_path`).
    """
    now = utcnow()
    rules = ExportRules(since=parse_since(since, now), room=room, min_likes=min_likes)
    check_out_dir(Path(out_dir))
    persona = Persona.load(settings.persona_path)
    bootstrap = bootstrap_for(settings, start_local=False)
    return asyncio.run(export_dataset(settings.topics, bootstrap, rules, Path(out_dir), persona, now)).lines


async def export_dataset(
    topics: TopicNames, bootstrap: str, rules: ExportRules, out_dir: Path, persona: Persona, now: datetime
) -> ExportReport:
    """Read the topics up to their ends as of now, join them, write the dataset; the summary in the report."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    join = ExportJoin(rules)
    undecodable: Counter[str] = Counter()
    consumer = make_consumer(bootstrap, None, CLIENT_ID)
    try:
        await consumer.start()
        reader = _BoundedReader(consumer, bootstrap, undecodable)
        await reader.snapshot_ends([
            topics.replies, topics.feedback, topics.review_decisions, topics.replies_retracted, topics.moderation,
            topics.fans_forget, *topics.submissions,
        ])
        since_ms = None
        if rules.since is not None:
            since_ms = int((rules.since - timedelta(seconds=MAX_CLOCK_SKEW_S)).timestamp() * 1000)
        await reader.read(topics.replies, _contract(Reply.model_validate_json, join.add_reply), since_ms)
        await reader.read(topics.feedback, _contract(decode_feedback, join.add_feedback))
        await reader.read(topics.review_decisions, _contract(ReviewDecision.model_validate_json, join.add_decision))
        await reader.read(topics.replies_retracted, _contract(decode_retraction, join.add_retraction))
        await reader.read(topics.moderation, _contract(ModerationRecord.model_validate_json, join.add_moderation))
        await reader.read(topics.fans_forget, _contract(decode_forget_request, join.add_forget))
        for topic in topics.submissions:
            await reader.read(topic, _item_reader(join, now))
    except KafkaError as exc:
        raise ExportError(f"cannot read the topics from the broker at {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    result = join.result()
    write_export(result, out_dir, persona)
    kept_ms = int(topic_plan(topics)[0].configs["retention.ms"])
    lines = summary_lines(result, str(out_dir / "data.jsonl"), rules.min_likes, dict(undecodable), kept_ms / HOUR_MS)
    return ExportReport(result, out_dir, dict(undecodable), lines)


class _Undecodable(Exception):
    """A record that is not the contract its topic carries."""


def _contract(decode: Callable[[bytes], object], add: Callable) -> Callable[[bytes], None]:
    def read(raw: bytes) -> None:
        try:
            record = decode(raw or b"")
        except (IdolstreamError, ValidationError, ValueError) as exc:
            raise _Undecodable from exc
        add(record)

    return read


def _item_reader(join: ExportJoin, now: datetime) -> Callable[[bytes], None]:
    """Only an item a pair needs is validated whole (pictures are large); the rest is looked at, not kept."""

    def read(raw: bytes) -> None:
        try:
            envelope = orjson.loads(raw or b"")
        except orjson.JSONDecodeError as exc:
            raise _Undecodable from exc
        if not isinstance(envelope, dict):
            raise _Undecodable
        room, item_id = envelope.get("room"), envelope.get("item_id")
        if not (isinstance(room, str) and isinstance(item_id, str)) or not join.wants(room, item_id):
            return
        try:
            # Old items are what an export reads: `now` only refuses items dated in the future.
            join.add_item(decode_submission(raw, now=now))
        except IdolstreamError as exc:
            raise _Undecodable from exc

    return read


class _BoundedReader:
    """Reads one topic at a time, from its start to the end offsets taken once by `snapshot_ends`."""

    def __init__(self, consumer: AIOKafkaConsumer, bootstrap: str, undecodable: Counter[str]) -> None:
        self.consumer = consumer
        self.bootstrap = bootstrap
        self.undecodable = undecodable
        self.partitions: dict[str, list[TopicPartition]] = {}
        self.ends: dict[TopicPartition, int] = {}

    async def snapshot_ends(self, topics: list[str]) -> None:
        for topic in topics:
            self.partitions[topic] = [TopicPartition(topic, p) for p in await partitions_of(self.bootstrap, topic)]
        self.ends = await self.consumer.end_offsets([tp for tps in self.partitions.values() for tp in tps])

    async def read(self, topic: str, handle: Callable[[bytes], None], since_ms: int | None = None) -> None:
        consumer, partitions = self.consumer, self.partitions[topic]
        consumer.assign(partitions)
        if since_ms is None:
            await consumer.seek_to_beginning(*partitions)
        else:
            starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
            for tp in partitions:
                found = starts.get(tp)
                consumer.seek(tp, self.ends[tp] if found is None else found.offset)
        behind = await self._behind(partitions)
        last_progress = time.monotonic()
        while behind:
            batches = await read_skipping_undecodable(consumer, *behind, timeout_ms=POLL_MS, max_records=POLL_RECORDS)
            for tp, entries in batches.items():
                for entry in entries:
                    if isinstance(entry, UndecodableRange):
                        self.undecodable[topic] += len([o for o in entry.offsets() if o < self.ends[tp]])
                    elif entry.offset < self.ends[tp]:
                        try:
                            handle(entry.value)
                        except _Undecodable:
                            self.undecodable[topic] += 1
            still = await self._behind(behind)
            if batches or still != behind:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_S:
                where = ", ".join(f"partition {tp.partition} at {await consumer.position(tp)} of {self.ends[tp]}"
                                  for tp in sorted(still))
                raise ExportError(f"{topic} stopped yielding records before its end ({where})")
            behind = still

    async def _behind(self, partitions) -> set[TopicPartition]:
        return {tp for tp in partitions if await self.consumer.position(tp) < self.ends[tp]}


def write_export(result: ExportResult, out_dir: Path, persona: Persona) -> Path:
    """data.jsonl, pairs.jsonl and images/ in `out_dir`, staged beside it and renamed into place."""
    check_out_dir(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    try:
        records, provenance = [], []
        for number, pair in enumerate(result.pairs):
            ref = f"images/{number:06d}{pair.image_suffix}"
            (staging / ref).write_bytes(pair.image)
            records.append(training_record(ref, pair.item, persona, pair.target))
            reply = pair.reply
            provenance.append({
                "image": ref, "reply_id": reply.reply_id, "item_id": reply.item_id, "room": reply.room,
                "tier": reply.tier, "model_id": reply.model_id, "persona_version": reply.persona_version,
                "replied_at": reply.timings.replied_at.isoformat(), "likes": pair.likes, "approved": pair.approved,
            })
        write_dataset(staging / "data.jsonl", records)
        (staging / "pairs.jsonl").write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in provenance))
        if out_dir.exists():
            out_dir.rmdir()  # empty, as checked
        staging.replace(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "data.jsonl"
