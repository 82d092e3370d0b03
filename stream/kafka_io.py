"""Small aiokafka helpers every service shares: topic creation, producer and consumer setup."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CorruptRecordException, KafkaError, TopicAlreadyExistsError, UnsupportedCodecError

from stream.contracts import MAX_MESSAGE_BYTES
from stream.errors import LocalKafkaError
from stream.flow import OffsetLedger
from stream.local_kafka import LocalKafka
from stream.settings import CommonSettings
from stream.topics import TopicSpec


def local_kafka(settings: CommonSettings) -> LocalKafka:
    return LocalKafka(
        settings.home / "kafka", port=settings.local_kafka_port, controller_port=settings.local_kafka_controller_port
    )


def bootstrap_for(settings: CommonSettings, *, start_local: bool) -> str:
    """KAFKA_BOOTSTRAP when set; else the local broker, started here when `start_local`."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    broker = local_kafka(settings)
    if start_local:
        return broker.up()
    if broker.pid() is None:
        raise LocalKafkaError("the local broker is not running: start it with `idolstream kafka up` or set KAFKA_BOOTSTRAP")
    return broker.bootstrap


async def ensure_topics(
    bootstrap: str, specs: list[TopicSpec], replicas: int = 1, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet, with `replicas` copies each; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(s.name, s.partitions, replicas, topic_configs=s.configs) for s in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another service created them first: that is the point of idempotence
        await _wait_for_leaders(admin, [s.name for s in specs], timeout_s)
    finally:
        await admin.close()
    if missing:
        await _wait_for_offsets(bootstrap, missing, timeout_s)
    return [s.name for s in missing]


async def _wait_for_offsets(bootstrap: str, specs: list[TopicSpec], timeout_s: float) -> None:
    """Until every partition of the new topics answers for its offsets.

    A new partition's leader is in the metadata a moment before it serves: a consumer
    group joining then logs an error on its first offset lookup. Asking for the end
    offsets here retries quietly until each leader answers.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.end_offsets([TopicPartition(s.name, p) for s in specs for p in range(s.partitions)])
    except TimeoutError:
        names = [s.name for s in specs]
        raise LocalKafkaError(f"new topics {names} serve no offsets after {timeout_s:.0f} s") from None
    finally:
        await consumer.stop()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float) -> None:
    """Creation is acknowledged by the controller before every broker serves the topic."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        if all(t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"topics {topics} have no leaders after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)  # poll interval of a condition wait


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    # acks=all + idempotence: a reply is "acknowledged" only once the broker has it for good,
    # and a retried send does not become a second record.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_MESSAGE_BYTES + 1024,
        linger_ms=2,
    )


def make_consumer(
    bootstrap: str,
    group_id: str | None,
    client_id: str,
    *,
    session_timeout_ms: int = 10_000,
    max_poll_interval_ms: int = 300_000,
    auto_offset_reset: str = "earliest",
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,  # offsets are committed by the Checkpoint only
        auto_offset_reset=auto_offset_reset,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
        max_poll_interval_ms=max_poll_interval_ms,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES + 1024,
        fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
        isolation_level="read_committed",
    )


class Checkpoint:
    """The one owner of commit order: output acknowledged, then offset committed.

    Services `track` each record when they read it and `acknowledge` it only after the
    broker has acknowledged what the record produced (a reply, an escalation, a dead
    letter). `commit` sends the offsets the ledger allows; nothing else commits.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.ledger = OffsetLedger()

    def track(self, record) -> None:
        self.ledger.track(TopicPartition(record.topic, record.partition), record.offset)

    def track_skipped(self, skipped: UndecodableRange) -> None:
        for offset in skipped.offsets():
            self.ledger.track(skipped.partition, offset)

    async def acknowledge(self, record, delivery) -> None:
        """Wait for `delivery` (the producer's future) and mark `record` finished."""
        await delivery
        self.ledger.finish(TopicPartition(record.topic, record.partition), record.offset)

    async def acknowledge_skipped(self, skipped: UndecodableRange, delivery) -> None:
        """Wait for the dead letter of undecodable offsets, then mark them all finished."""
        await delivery
        for offset in skipped.offsets():
            self.ledger.finish(skipped.partition, offset)

    async def commit(self) -> dict:
        offsets = self.ledger.committable()
        if offsets:
            await self.consumer.commit(offsets)
            self.ledger.mark_committed(offsets)
        return offsets

    def forget(self, partitions) -> None:
        self.ledger.forget(partitions)


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """Partition ids of an existing topic (for readers that assign partitions themselves)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise LocalKafkaError(f"topic {topic} does not exist; create the topics first (`idolstream topics`)")
    return sorted(p["partition"] for p in described["partitions"])


# -- record batches a consumer cannot decode ------------------------------------------
#
# aiokafka decodes a fetched record batch inside `getmany`. When it cannot (a codec library
# missing, a corrupt batch), `getmany` raises for the whole fetch, names no partition, and
# keeps its position: the next call fetches and fails on the same batch again, and the good
# records fetched before it in the same response are never returned. `read_skipping_undecodable`
# turns that into progress: it takes the assigned partitions one record at a time until the one
# that fails is found, returns the good records before the bad batch, and skips the bad offsets
# one by one (the batch's extent is unknown without decoding it) as an `UndecodableRange`.

DECODE_ERRORS = (UnsupportedCodecError, CorruptRecordException)
# Records taken one at a time per partition while isolating (bounded like a normal poll).
ISOLATE_MAX_RECORDS = 16
# Offsets skipped in one isolation at most; a larger bad batch takes several polls.
ISOLATE_MAX_SKIPS = 1000
ISOLATE_FETCH_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class UndecodableRange:
    """Offsets `first`..`last` of `partition` that could not be decoded, and why."""

    partition: TopicPartition
    first: int
    last: int
    error: str

    def offsets(self) -> range:
        return range(self.first, self.last + 1)


def is_decode_error(error: BaseException) -> bool:
    """A failure to decode fetched bytes: aiokafka's own, or a decompressor's (not a Kafka error)."""
    return isinstance(error, DECODE_ERRORS) or not isinstance(error, (KafkaError, asyncio.CancelledError))


async def read_skipping_undecodable(
    consumer: AIOKafkaConsumer, *partitions: TopicPartition, timeout_ms: int, max_records: int
) -> dict[TopicPartition, list]:
    """`getmany` (of `partitions`, default all), except that a batch nobody can decode is skipped.

    Returns, per partition, its records and `UndecodableRange`s in offset order.
    """
    try:
        return await consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
    except Exception as error:
        if not is_decode_error(error):
            raise
        first_error = error
    found = await _isolate_undecodable(consumer, set(partitions) or consumer.assignment())
    if not found:
        raise first_error  # no partition fails on its own: not a batch's fault
    return found


async def _isolate_undecodable(consumer: AIOKafkaConsumer, among: set[TopicPartition]) -> dict[TopicPartition, list]:
    found: dict[TopicPartition, list] = {}
    for tp in sorted(among - consumer.paused()):
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) >= highwater:
            continue  # nothing fetched past the position here: not the failing partition
        out: list = []
        taken = skipped = 0
        while taken < ISOLATE_MAX_RECORDS and skipped < ISOLATE_MAX_SKIPS:
            try:
                got = await consumer.getmany(tp, timeout_ms=ISOLATE_FETCH_TIMEOUT_MS, max_records=1)
            except Exception as error:
                if not is_decode_error(error):
                    raise
                offset = await consumer.position(tp)
                consumer.seek(tp, offset + 1)
                skipped += 1
                why = str(error) if type(error).__name__ in str(error) else f"{type(error).__name__}: {error}"
                last = out[-1] if out else None
                if isinstance(last, UndecodableRange) and last.last == offset - 1 and last.error == why:
                    out[-1] = UndecodableRange(tp, last.first, offset, why)  # the same batch, or its twin
                else:
                    out.append(UndecodableRange(tp, offset, offset, why))
                continue
            records = got.get(tp, [])
            if not records:
                break
            out.extend(records)
            taken += len(records)
        if out:
            found[tp] = out
    return found


async def read_recent(bootstrap: str, topic: str, since_s: float, client_id: str) -> list:
    """Every readable record of `topic` written in the last `since_s` seconds, up to its end now.

    For rebuilding in-memory state from a topic at start (a group-less reader of its own).
    Undecodable batches are skipped: the caller gets what can be read.
    """
    consumer = make_consumer(bootstrap, None, client_id)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: int((time.time() - since_s) * 1000) for tp in partitions})
        for tp in partitions:
            found = starts.get(tp)
            consumer.seek(tp, ends[tp] if found is None else found.offset)
        records: list = []
        behind = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while behind:
            batches = await read_skipping_undecodable(consumer, timeout_ms=200, max_records=500)
            for entries in batches.values():
                records.extend(e for e in entries if not isinstance(e, UndecodableRange))
            behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
        return records
    finally:
        await consumer.stop()
