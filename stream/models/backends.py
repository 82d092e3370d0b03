"""Which runner serves a registry entry: `load_runner` is the one place that decides."""

from __future__ import annotations

from pathlib import Path

from stream.models.registry import ModelSpec
from stream.models.runtime import ModelRunner


def load_runner(spec: ModelSpec, project_root: str | Path) -> ModelRunner:
    """A ready runner for `spec` (raises ModelLoadError when it cannot be loaded).

    ``backend: "transformers"`` loads the weights into this process (a ``text_only`` entry,
    such as a Qwen3Guard-Gen text guard, as a causal LM; every other one as a Qwen3-VL);
    ``backend: "openai"`` talks to the server at ``spec.endpoint`` and loads nothing (the
    server is first reached on the first batch, so a server that is down shows up as
    ModelRuntimeError).
    """
    if spec.backend == "openai":
        from stream.models.openai_runner import OpenAIRunner

        return OpenAIRunner(spec)
    if spec.text_only:
        from stream.models.guard_runner import TextGuardRunner

        return TextGuardRunner.load(spec, project_root)
    from stream.models.runtime import TransformersRunner

    return TransformersRunner.load(spec, project_root)
