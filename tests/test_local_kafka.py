import asyncio
import logging
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.contracts import MAX_MESSAGE_BYTES
from stream.errors import LocalKafkaError
from stream.kafka_io import ensure_topics, make_consumer, make_producer
from stream.local_kafka import LocalKafka, find_free_port
from stream.local_kafka.launcher import OFFSETS_TOPIC_PARTITIONS, offsets_partition, probe_groups
from stream.topics import TopicNames, topic_plan
from tests.conftest import PROJECT_ROOT


def test_a_missing_java_or_maven_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn on it
    broker = LocalKafka(tmp_path / "kafka", port=find_free_port(), controller_port=find_free_port(), jars_root=tmp_path / "jars")
    with pytest.raises(LocalKafkaError, match="(mvn|java).*KAFKA_BOOTSTRAP"):
        broker.up(timeout_s=5)


def test_status_of_a_broker_that_never_started(tmp_path):
    status = LocalKafka(tmp_path, port=find_free_port()).status()
    assert status["running"] is False and status["answering"] is False


@pytest.mark.kafka
async def test_topics_are_created_once_with_image_sized_limits(kafka_bootstrap, topic_prefix):
    plan = topic_plan(TopicNames(topic_prefix), partitions=3)
    created = await ensure_topics(kafka_bootstrap, plan)
    assert sorted(created) == sorted(s.name for s in plan)
    assert await ensure_topics(kafka_bootstrap, plan) == []  # idempotent

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = TopicNames(topic_prefix)
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names.fan_images)])
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert configs["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
        described = await admin.describe_topics([names.replies])
        assert len(described[0]["partitions"]) == 3
    finally:
        await admin.close()


@pytest.mark.kafka
async def test_the_largest_allowed_message_round_trips(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    await ensure_topics(kafka_bootstrap, topic_plan(names, partitions=1))
    payload = b"x" * (MAX_MESSAGE_BYTES - 512)
    producer = make_producer(kafka_bootstrap, "test")
    consumer = make_consumer(kafka_bootstrap, f"{topic_prefix}g", "test")
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(names.fan_images, payload, key=b"room")
        consumer.subscribe([names.fan_images])
        record = await consumer.getone()
        assert record.value == payload
    finally:
        await consumer.stop()
        await producer.stop()


def test_groups_are_placed_on_the_offsets_partition_kafka_places_them():
    # Java: "hello".hashCode() == 99162322; "polygenelubricants".hashCode() == Integer.MIN_VALUE;
    # "日本".hashCode() == 835047 (UTF-16 code units). Kafka's default is 50 offsets partitions.
    assert offsets_partition("hello", 50) == 99162322 % 50
    assert offsets_partition("polygenelubricants", 50) == 0
    assert offsets_partition("日本", 50) == 835047 % 50
    probes = probe_groups(OFFSETS_TOPIC_PARTITIONS)
    assert sorted(offsets_partition(g) for g in probes) == list(range(OFFSETS_TOPIC_PARTITIONS))


@pytest.mark.kafka
async def test_a_consumer_group_joins_a_just_started_broker_without_an_error(tmp_path, topic_prefix, caplog):
    broker = LocalKafka(tmp_path / "kafka", port=find_free_port(), controller_port=find_free_port(),
                        jars_root=PROJECT_ROOT / "var" / "kafka" / "jars")
    bootstrap = await asyncio.to_thread(broker.up)
    try:
        names = TopicNames(topic_prefix)
        await ensure_topics(bootstrap, topic_plan(names, partitions=1))
        caplog.set_level(logging.INFO, logger="aiokafka")
        consumer = make_consumer(bootstrap, f"{topic_prefix}g", "test")
        await consumer.start()
        try:
            consumer.subscribe([names.fan_images])
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                await consumer.getmany(timeout_ms=200)
            assert consumer.assignment(), "the group never got its partition"
        finally:
            await consumer.stop()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], "a newcomer reads ERROR as broken"
    finally:
        await asyncio.to_thread(broker.down)
    assert broker.pid() is None
