"""A worker reads its model registry afresh for each switch: new entries are switchable without a restart."""

from __future__ import annotations

import json

import pytest

from consumers.model_slot import ModelSlot
from consumers.services import RegistryLoader
from stream.errors import SwitchRefused
from stream.metrics import WorkerMetrics
from stream.models.errors import ModelLoadError
from stream.switching import ModelSwitchGate
from tests.processes import registry_copy

BASE = "tiny-qwen3vl-dense"


def _entries(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path, raw) -> None:
    path.write_text(json.dumps(raw, indent=2), encoding="utf-8")


def _add_copy_of(path, model_id: str, new_id: str, **changes) -> None:
    raw = _entries(path)
    entry = next(e for e in raw["models"] if e["id"] == model_id)
    raw["models"].append({**entry, "id": new_id, "tiny": False, **changes})
    _write(path, raw)


def test_a_model_registered_after_the_worker_started_can_be_switched_to(tiny_checkpoints, tmp_path):
    path = registry_copy(tmp_path)
    loader = RegistryLoader(path)
    slot = ModelSlot(loader(BASE), loader, loader.known_ids, ModelSwitchGate(0), WorkerMetrics("fast"))
    try:
        with pytest.raises(SwitchRefused) as refused:
            slot.request_switch("liked")
        assert refused.value.code == "unknown_model"

        _add_copy_of(path, BASE, "liked")  # what `models finetune` does to the file
        assert "liked" in loader.known_ids()
        runner = loader("liked")
        assert runner.spec.id == "liked"
        runner.close()
    finally:
        slot.close()


def test_a_model_loaded_before_loads_again_after_its_entry_is_gone(tiny_checkpoints, tmp_path):
    path = registry_copy(tmp_path)
    _add_copy_of(path, BASE, "previous")
    loader = RegistryLoader(path)
    loader("previous").close()
    raw = _entries(path)
    raw["models"] = [e for e in raw["models"] if e["id"] != "previous"]
    _write(path, raw)

    runner = loader("previous")  # a failed switch going back to what ran before
    assert runner.spec.id == "previous"
    runner.close()
    path.write_text("{ not json", encoding="utf-8")
    loader("previous").close()
    with pytest.raises(ModelLoadError):
        loader(BASE)  # never loaded here: the unreadable file is the answer


def test_an_unreadable_registry_refuses_the_switch_and_says_why(tiny_checkpoints, tmp_path):
    path = registry_copy(tmp_path)
    loader = RegistryLoader(path)
    slot = ModelSlot(loader(BASE), loader, loader.known_ids, ModelSwitchGate(0), WorkerMetrics("fast"))
    try:
        path.write_text('{"models": [', encoding="utf-8")
        with pytest.raises(SwitchRefused) as refused:
            slot.request_switch("tiny-qwen3vl-moe")
        assert refused.value.code == "registry_unreadable"
        assert str(path) in refused.value.detail
        assert slot.runner is not None and slot.model_id == BASE  # still answering with the model it had
    finally:
        slot.close()


def test_a_demo_model_not_yet_trained_names_the_command_that_trains_it(tmp_path):
    path = registry_copy(tmp_path)
    _add_copy_of(path, "demo-qwen3vl", "demo-untrained", source=str(tmp_path / "var" / "models" / "none"), demo=True)
    with pytest.raises(ModelLoadError, match="idolstream models train-demo"):
        RegistryLoader(path)("demo-untrained")
