"""Shared fixtures: one real Kafka broker per test session, tiny checkpoints and the demo model
(each built at most once), topic isolation.

The broker is the project's own local KRaft broker on free ports in a temporary home,
unless KAFKA_BOOTSTRAP points at an existing cluster. Each test gets its own topic prefix
and consumer groups, so tests never see each other's messages.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from stream.local_kafka import LocalKafka, find_free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    existing = os.environ.get("KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    broker = LocalKafka(
        tmp_path_factory.mktemp("kafka"),
        port=find_free_port(),
        controller_port=find_free_port(),
        jars_root=PROJECT_ROOT / "var" / "kafka" / "jars",
    )
    bootstrap = broker.up()
    try:
        yield bootstrap
    finally:
        broker.down()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def registry():
    from stream.models.registry import ModelRegistry

    return ModelRegistry.load(PROJECT_ROOT / "config" / "models.json")


@pytest.fixture(scope="session")
def tiny_checkpoints(registry) -> Path:
    """The registry's tiny checkpoints, built once into the project's var/ (as the demo does)."""
    from stream.models.tiny import build_missing

    build_missing(registry, PROJECT_ROOT)
    return PROJECT_ROOT / "var" / "models"


@pytest.fixture(scope="session")
def demo_checkpoint(registry, tiny_checkpoints) -> Path:
    """The registry's demo model (trained from scratch, a few minutes), built once into var/ as the demo does."""
    from stream.learning.demo_model import DEMO_MODEL_ID, build_missing_checkpoints

    build_missing_checkpoints(registry, PROJECT_ROOT)
    return registry.get(DEMO_MODEL_ID).local_dir(PROJECT_ROOT)


@pytest.fixture(scope="session")
def demo_runner(registry, demo_checkpoint):
    """The demo model loaded through the runner, as a fast tier loads it."""
    from stream.models.runtime import TransformersRunner

    runner = TransformersRunner.load(registry.get("demo-qwen3vl"), PROJECT_ROOT)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def fast_runner(registry, tiny_checkpoints):
    from stream.models.runtime import TransformersRunner

    runner = TransformersRunner.load(registry.get("tiny-qwen3vl-moe"), PROJECT_ROOT)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def deep_runner(registry, tiny_checkpoints):
    from stream.models.runtime import TransformersRunner

    runner = TransformersRunner.load(registry.get("tiny-qwen3vl-thinking"), PROJECT_ROOT)
    yield runner
    runner.close()
