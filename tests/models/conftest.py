"""Fixtures for the model layer: tiny checkpoints built once per session, offline."""

from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: nothing may come from the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import shutil
from pathlib import Path

import pytest

from stream.models.registry import ModelRegistry
from stream.models.tiny import build_missing

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_REGISTRY = PROJECT_ROOT / "config" / "models.json"


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """The project's registry, copied into a scratch project root whose tiny entries are built."""
    root = tmp_path_factory.mktemp("project")
    (root / "config").mkdir()
    shutil.copy(PROJECT_REGISTRY, root / "config" / "models.json")
    registry = ModelRegistry.load(root / "config" / "models.json")
    built = build_missing(registry)
    # One directory per tiny entry, plus the ControlNet a tiny draw entry names.
    controlnets = sum(1 for spec in registry if spec.tiny and spec.draw is not None and spec.draw.controlnet)
    assert len(built) == sum(1 for spec in registry if spec.tiny) + controlnets
    assert {path.name for path in built} >= {"tiny-qwen-image", "tiny-qwen-image-controlnet"}
    return registry


@pytest.fixture(scope="session")
def moe_dir(tiny_registry: ModelRegistry) -> Path:
    return Path(tiny_registry.resolve_source("tiny-qwen3vl-moe"))


@pytest.fixture(scope="session")
def thinking_dir(tiny_registry: ModelRegistry) -> Path:
    return Path(tiny_registry.resolve_source("tiny-qwen3vl-thinking"))
