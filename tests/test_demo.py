"""The README's main job, end to end: `idolstream demo --items N --exit` on the session's broker."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.kafka


def test_the_demo_answers_every_fresh_item_escalates_some_and_sheds_the_replays(kafka_bootstrap, topic_prefix, tiny_checkpoints):
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "IDOLSTREAM_TOPIC_PREFIX": topic_prefix,
        "IDOLSTREAM_GROUP_ID": f"{topic_prefix}fast",
        "IDOLSTREAM_DEEP_GROUP_ID": f"{topic_prefix}deep",
        "IDOLSTREAM_PORT": "0",
        "IDOLSTREAM_TOPIC_PARTITIONS": "2",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--items", "20", "--exit", "--timeout", "240"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=300,
    )
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output + done.stderr.decode(errors="replace")[-3000:]
    summary = orjson.loads(output.strip().splitlines()[-1])
    assert summary["items"] == 20 and summary["shed"] == 2  # items 10 and 20 are replays from a bot's backlog
    assert summary["replied"] == 18 and summary["dead_lettered"] == 0
    assert set(summary["by_tier"]) == {"fast", "deep", "fallback"}
    assert sum(summary["by_tier"].values()) == 18
    assert summary["by_tier"]["deep"] >= 1, "the sample traffic holds items that escalate"
    assert "holding" in output, "escalated items show a holding line first"
