"""At-least-once: a fast tier killed between producing a reply and committing loses nothing."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from consumers.services import prepare_topics
from producers.client import SubmissionClient
from producers.samples import sample_item
from stream.settings import FastTierSettings
from tests.processes import service_env, start_service
from tests.stack import read_topic

pytestmark = pytest.mark.kafka


def start_fast_tier(bootstrap: str, prefix: str, commit_interval_s: float, log: Path) -> subprocess.Popen:
    # Escalation off: no deep tier runs here. A long max age: the item redone after the kill
    # must be answered again, not shed as stale because two model loads took a while.
    env = service_env(bootstrap, prefix, commit_interval_s=str(commit_interval_s), escalate="false", max_age_s="600")
    return start_service("fast-tier", env, log)


async def committed_offsets(bootstrap: str, group: str) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items() if meta.offset >= 0}
    finally:
        await admin.close()


async def test_a_reply_produced_but_not_committed_is_answered_again_after_a_kill(
    kafka_bootstrap, topic_prefix, tiny_checkpoints, tmp_path
):
    settings = FastTierSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2)
    await prepare_topics(settings, kafka_bootstrap)
    group = f"{topic_prefix}fast"
    async with SubmissionClient(kafka_bootstrap, settings.topics) as client:
        item = sample_item(11).to_submission("room-crash")
        await client.submit(item)

    # Commits only at shutdown: a SIGKILL after the reply is acked lands between reply and commit.
    first = start_fast_tier(kafka_bootstrap, topic_prefix, commit_interval_s=3600, log=tmp_path / "first.log")
    try:
        replies = await read_topic(kafka_bootstrap, settings.topics.replies, lambda r: len(r) >= 1, timeout=120)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert [r["item_id"] for r in replies] == [item.item_id]
    assert await committed_offsets(kafka_bootstrap, group) == {}

    second = start_fast_tier(kafka_bootstrap, topic_prefix, commit_interval_s=0.2, log=tmp_path / "second.log")
    try:
        replies = await read_topic(kafka_bootstrap, settings.topics.replies, lambda r: len(r) >= 2, timeout=120)
    except TimeoutError:
        pytest.fail("no second answer; the restarted tier said:\n" + (tmp_path / "second.log").read_text()[-3000:])
    finally:
        second.send_signal(signal.SIGTERM)  # a clean stop commits what was answered
        second.wait(60)
    assert second.returncode == 0, (tmp_path / "second.log").read_text(errors="replace")[-3000:]
    assert [r["item_id"] for r in replies] == [item.item_id, item.item_id]
    assert replies[0]["reply_id"] != replies[1]["reply_id"]
    assert sum((await committed_offsets(kafka_bootstrap, group)).values()) == 1  # one item, committed once answered
