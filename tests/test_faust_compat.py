"""faust-streaming (the feedback app's library) works against the pinned broker."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from stream.kafka_io import ensure_topics
from stream.topics import TopicSpec

pytestmark = pytest.mark.kafka

APP = """
import os
import faust

app = faust.App("{group}", broker="kafka://{bootstrap}", store="memory://", web_enabled=False, topic_partitions=1)
topic = app.topic("{topic}", value_serializer="raw")


@app.agent(topic)
async def consume(stream):
    async for value in stream:
        with open("received.txt", "wb") as out:  # faust reroutes print() into its log
            out.write(value)
        os._exit(0)  # the check is done: one record produced and consumed through a group


@app.timer(0.5)
async def send():
    await topic.send(value=b"hello from faust")
"""


async def test_a_faust_agent_produces_and_consumes_through_a_group(kafka_bootstrap, topic_prefix, tmp_path):
    topic = f"{topic_prefix}faust.check"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1)])  # our brokers never auto-create topics
    (tmp_path / "faust_check.py").write_text(
        textwrap.dedent(APP.format(group=f"{topic_prefix}faust", bootstrap=kafka_bootstrap, topic=topic))
    )
    worker = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "faust_check", "worker", "-l", "warn"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    assert (tmp_path / "received.txt").read_bytes() == b"hello from faust"
