"""At-least-once: a fast tier killed between producing a reply and committing loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from consumers.services import prepare_topics
from producers.client import SubmissionClient
from producers.samples import sample_item
from stream.settings import FastTierSettings
from tests.conftest import PROJECT_ROOT
from tests.stack import read_topic

pytestmark = pytest.mark.kafka


def start_fast_tier(bootstrap: str, prefix: str, commit_interval_s: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "IDOLSTREAM_TOPIC_PREFIX": prefix,
        "IDOLSTREAM_GROUP_ID": f"{prefix}fast",
        "IDOLSTREAM_SESSION_TIMEOUT_MS": "6000",
        "IDOLSTREAM_COMMIT_INTERVAL_S": str(commit_interval_s),
        "IDOLSTREAM_ESCALATE": "false",  # no deep tier runs here
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "serve", "fast-tier"], cwd=PROJECT_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def committed_offsets(bootstrap: str, group: str) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items() if meta.offset >= 0}
    finally:
        await admin.close()


async def test_a_reply_produced_but_not_committed_is_answered_again_after_a_kill(
    kafka_bootstrap, topic_prefix, tiny_checkpoints
):
    settings = FastTierSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2)
    await prepare_topics(settings, kafka_bootstrap)
    group = f"{topic_prefix}fast"
    async with SubmissionClient(kafka_bootstrap, settings.topics) as client:
        item = sample_item(11).to_submission("room-crash")
        await client.submit(item)

    # Commits only at shutdown: a SIGKILL after the reply is acked lands between reply and commit.
    first = start_fast_tier(kafka_bootstrap, topic_prefix, commit_interval_s=3600)
    try:
        replies = await read_topic(kafka_bootstrap, settings.topics.replies, lambda r: len(r) >= 1, timeout=120)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert [r["item_id"] for r in replies] == [item.item_id]
    assert await committed_offsets(kafka_bootstrap, group) == {}

    second = start_fast_tier(kafka_bootstrap, topic_prefix, commit_interval_s=0.2)
    try:
        replies = await read_topic(kafka_bootstrap, settings.topics.replies, lambda r: len(r) >= 2, timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)  # a clean stop commits what was answered
        output = second.communicate(timeout=60)[0].decode(errors="replace")
    assert second.returncode == 0, output
    assert [r["item_id"] for r in replies] == [item.item_id, item.item_id]
    assert replies[0]["reply_id"] != replies[1]["reply_id"]
    assert sum((await committed_offsets(kafka_bootstrap, group)).values()) == 1  # one item, committed once answered
