"""`idolstream submit`: what a bot author or operator types to send an image."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

import orjson
import pytest
from PIL import Image

from consumers.services import prepare_topics
from stream.contracts import Submission
from stream.settings import CommonSettings
from tests.conftest import PROJECT_ROOT
from tests.stack import read_topic

pytestmark = pytest.mark.kafka


def run_submit(bootstrap: str, prefix: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "IDOLSTREAM_TOPIC_PREFIX": prefix}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "submit", *args], cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )


async def test_submit_sends_each_image_as_a_valid_submission_keyed_by_room(kafka_bootstrap, topic_prefix, tmp_path):
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2)
    await prepare_topics(settings, kafka_bootstrap)
    files = []
    for n, fmt in enumerate(["PNG", "JPEG"]):
        path = tmp_path / f"drawing{n}.{fmt.lower()}"
        Image.new("RGB", (120, 80), "pink").save(path, format=fmt)
        files.append(path)

    result = run_submit(kafka_bootstrap, topic_prefix, "--room", "room-cli", "--user", "u-7", "--name", "Aki",
                        "--text", "for you!", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr

    records = await read_topic(kafka_bootstrap, settings.topics.fan_images, lambda r: len(r) >= 2)
    subs = [Submission.model_validate_json(orjson.dumps(r)) for r in records]
    assert {s.image.mime for s in subs} == {"image/png", "image/jpeg"}
    assert all(s.room == "room-cli" and s.user.display_name == "Aki" and s.text == "for you!" for s in subs)
    assert sorted(base64.b64decode(s.image.data) for s in subs) == sorted(p.read_bytes() for p in files)
    for sub in subs:
        assert sub.item_id in result.stdout


def test_submit_refuses_an_unsupported_file_with_a_clear_message(kafka_bootstrap, topic_prefix, tmp_path):
    path = tmp_path / "scan.bmp"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="BMP")
    path.write_bytes(buf.getvalue())
    result = run_submit(kafka_bootstrap, topic_prefix, "--room", "r", "--user", "u", str(path))
    assert result.returncode == 2
    assert "unsupported image type" in result.stderr and result.stdout == ""
