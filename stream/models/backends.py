"""Which runner serves a registry entry: `load_runner` is the one place that decides."""

from __future__ import annotations

from pathlib import Path

from stream.models.registry import ModelSpec
from stream.models.runtime import ModelRunner


def load_runner(spec: ModelSpec, project_root: str | Path) -> ModelRunner:
    """A ready runner for `spec` (raises ModelLoadError when it cannot be loaded)."""
    from stream.models.runtime import TransformersRunner

    return TransformersRunner.load(spec, project_root)
