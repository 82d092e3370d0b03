"""Small aiokafka helpers every service shares: topic creation, producer and consumer setup."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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
        return [s.name for s in missing]
    finally:
        await admin.close()


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

    async def acknowledge(self, record, delivery) -> None:
        """Wait for `delivery` (the producer's future) and mark `record` finished."""
        await delivery
        self.ledger.finish(TopicPartition(record.topic, record.partition), record.offset)

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
