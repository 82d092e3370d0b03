"""`load_runner` picks the runner a registry entry asks for."""

from __future__ import annotations

from stream.models.backends import load_runner
from stream.models.openai_runner import OpenAIRunner
from stream.models.runtime import TransformersRunner


def test_in_process_entry_loads_its_weights_here(tiny_registry):
    runner = load_runner(tiny_registry.get("tiny-qwen3vl-moe"), tiny_registry.project_root)
    try:
        assert isinstance(runner, TransformersRunner)
    finally:
        runner.close()


def test_openai_entry_gets_an_http_runner_for_its_endpoint(tiny_registry):
    spec = tiny_registry.get("Qwen/Qwen3-VL-8B-Instruct").model_copy(
        update={"backend": "openai", "endpoint": "http://vllm-fast:8000/"}
    )

    runner = load_runner(spec, tiny_registry.project_root)

    # Nothing is contacted (or downloaded) until the first batch.
    assert isinstance(runner, OpenAIRunner)
    assert (runner.spec, runner.endpoint) == (spec, "http://vllm-fast:8000")
