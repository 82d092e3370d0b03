"""The model registry file: what it lists, how it resolves sources, what it rejects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.models.errors import ModelLoadError, UnknownModelError
from stream.models.registry import ModelRegistry, ModelSpec, register_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_REGISTRY = PROJECT_ROOT / "config" / "models.json"

REAL_IDS = {
    "Qwen/Qwen3-VL-2B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-2B-Thinking",
    "Qwen/Qwen3-VL-4B-Thinking",
    "Qwen/Qwen3-VL-8B-Thinking",
    "Qwen/Qwen3-VL-30B-A3B-Instruct",
    "Qwen/Qwen3-VL-30B-A3B-Thinking",
}
REAL_GUARD_IDS = {"Qwen/Qwen3Guard-Gen-0.6B", "Qwen/Qwen3Guard-Gen-4B", "qwen3vl-4b-imageguard"}
TINY_GUARD_IDS = {"tiny-qwen3guard", "tiny-qwen3vl-imageguard"}
DRAW_IDS = {"tiny-qwen-image", "Qwen/Qwen-Image"}

TINY_ENTRY = {
    "id": "tiny",
    "source": "var/models/tiny",
    "architecture": "moe",
    "mode": "instruct",
    "tier": "fast",
    "dtype": "float32",
    "max_pixels": 65536,
    "min_pixels": 4096,
    "max_new_tokens": 16,
    "temperature": 0.0,
    "tiny": True,
}


def write_registry(root: Path, models: list[dict]) -> Path:
    path = root / "config" / "models.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    return path


def test_project_registry_lists_tiny_demo_and_real_models():
    registry = ModelRegistry.load(PROJECT_REGISTRY)

    tiny_ids = {"tiny-qwen3vl-moe", "tiny-qwen3vl-dense", "tiny-qwen3vl-thinking"}
    assert tiny_ids | TINY_GUARD_IDS | DRAW_IDS | {"demo-qwen3vl"} | REAL_IDS | REAL_GUARD_IDS == set(registry.ids())
    demo = registry.get("demo-qwen3vl")
    assert (demo.tier, demo.architecture, demo.mode, demo.demo, demo.tiny) == ("fast", "dense", "instruct", True, False)
    assert registry.resolve_source("demo-qwen3vl") == str(PROJECT_ROOT / "var/models/demo-qwen3vl")
    assert registry.project_root == PROJECT_ROOT
    fast = registry.get("tiny-qwen3vl-moe")
    assert (fast.tier, fast.architecture, fast.mode, fast.tiny) == ("fast", "moe", "instruct", True)
    deep = registry.get("tiny-qwen3vl-thinking")
    assert (deep.tier, deep.architecture, deep.mode, deep.tiny) == ("deep", "dense", "thinking", True)
    thinking = registry.get("Qwen/Qwen3-VL-8B-Thinking")
    assert thinking.tier == "deep" and thinking.max_new_tokens > registry.get("Qwen/Qwen3-VL-4B-Instruct").max_new_tokens


DRAW_ENTRY = {
    "id": "draw",
    "source": "var/models/tiny-draw",
    "architecture": "dense",
    "tier": "draw",
    "dtype": "float32",
    "draw": {"steps": 4, "width": 128, "height": 96, "deadline_ms": 5000, "controlnet": "var/models/tiny-cn"},
    "tiny": True,
}


def test_a_draw_entry_gives_steps_size_guidance_deadline_and_its_controlnet(tmp_path):
    registry = ModelRegistry.load(write_registry(tmp_path, [DRAW_ENTRY, TINY_ENTRY]))

    draw = registry.get("draw")
    assert (draw.tier, draw.mode, draw.max_new_tokens) == ("draw", None, None)
    assert (draw.draw.steps, draw.draw.width, draw.draw.height, draw.draw.deadline_ms) == (4, 128, 96, 5000)
    assert draw.draw.true_cfg_scale == 1.0
    assert draw.resolve_controlnet(tmp_path) == str(tmp_path / "var/models/tiny-cn")
    project = ModelRegistry.load(PROJECT_REGISTRY)
    assert project.get("Qwen/Qwen-Image").resolve_controlnet(PROJECT_ROOT) == "InstantX/Qwen-Image-ControlNet-Union"
    assert project.resolve_source("tiny-qwen-image") == str(PROJECT_ROOT / "var/models/tiny-qwen-image")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"draw": None}, "needs its draw settings"),
        ({"max_new_tokens": 16}, "max_new_tokens make no sense for a draw model"),
        ({"mode": "instruct"}, "mode make no sense for a draw model"),
        ({"max_pixels": 65536, "min_pixels": 4096}, "max_pixels and min_pixels make no sense"),
        ({"draw": DRAW_ENTRY["draw"] | {"width": 100}}, "multiple of 16"),
        ({"draw": DRAW_ENTRY["draw"] | {"steps": 0}}, "steps"),
        ({"draw": DRAW_ENTRY["draw"] | {"true_cfg_scale": 0.5}}, "true_cfg_scale"),
        ({"draw": {"steps": 4, "width": 128, "height": 96}}, "deadline_ms"),
        ({"draw": DRAW_ENTRY["draw"] | {"seed": 1}}, "seed"),
    ],
)
def test_draw_entries_are_checked_with_clear_errors(tmp_path, change, complaint):
    entry = {key: value for key, value in (DRAW_ENTRY | change).items() if value is not None}
    with pytest.raises(ModelLoadError, match=complaint):
        ModelRegistry.load(write_registry(tmp_path, [entry]))


def test_language_models_still_need_their_generation_limits_and_take_no_draw_settings(tmp_path):
    without = {key: value for key, value in TINY_ENTRY.items() if key != "max_new_tokens"}
    with pytest.raises(ModelLoadError, match="max_new_tokens missing"):
        ModelRegistry.load(write_registry(tmp_path, [without]))
    with pytest.raises(ModelLoadError, match="draw settings make no sense for a fast model"):
        ModelRegistry.load(write_registry(tmp_path, [TINY_ENTRY | {"draw": DRAW_ENTRY["draw"]}]))


def test_tiny_sources_resolve_under_project_root_and_hub_ids_pass_through():
    registry = ModelRegistry.load(PROJECT_REGISTRY)

    assert registry.resolve_source("tiny-qwen3vl-moe") == str(PROJECT_ROOT / "var/models/tiny-qwen3vl-moe")
    assert registry.resolve_source("Qwen/Qwen3-VL-4B-Instruct") == "Qwen/Qwen3-VL-4B-Instruct"


def test_relative_source_resolves_against_registry_files_parent_dir(tmp_path):
    checkpoint = tmp_path / "models" / "mine"
    checkpoint.mkdir(parents=True)
    entries = [
        TINY_ENTRY | {"id": "a", "source": "models/mine", "tiny": False},  # owner/name shape, but exists locally
        TINY_ENTRY | {"id": "b", "source": "./elsewhere", "tiny": False},
        TINY_ENTRY | {"id": "c", "source": str(tmp_path / "abs"), "tiny": False},
    ]
    registry = ModelRegistry.load(write_registry(tmp_path, entries))

    assert registry.resolve_source("a") == str(checkpoint)
    assert registry.resolve_source("b") == str(tmp_path / "elsewhere")
    assert registry.resolve_source("c") == str(tmp_path / "abs")


def test_unknown_id_error_lists_known_ids():
    registry = ModelRegistry.load(PROJECT_REGISTRY)

    with pytest.raises(KeyError) as caught:
        registry.get("qwen-9000")

    assert isinstance(caught.value, UnknownModelError)
    message = str(caught.value)
    assert "qwen-9000" in message
    assert "tiny-qwen3vl-moe" in message and "Qwen/Qwen3-VL-8B-Thinking" in message


def test_extra_field_is_rejected(tmp_path):
    path = write_registry(tmp_path, [TINY_ENTRY | {"max_pixel": 10}])

    with pytest.raises(ModelLoadError, match="max_pixel"):
        ModelRegistry.load(path)


def test_unknown_tier_and_inverted_pixel_range_are_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="tier"):
        ModelRegistry.load(write_registry(tmp_path, [TINY_ENTRY | {"tier": "medium"}]))
    with pytest.raises(ModelLoadError, match="min_pixels"):
        ModelRegistry.load(write_registry(tmp_path, [TINY_ENTRY | {"min_pixels": 10**6}]))


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="duplicate"):
        ModelRegistry.load(write_registry(tmp_path, [TINY_ENTRY, TINY_ENTRY]))


def test_missing_registry_file_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        ModelRegistry.load(tmp_path / "nope.json")


OPENAI_ENTRY = TINY_ENTRY | {
    "id": "fleet",
    "source": "Qwen/Qwen3-VL-8B-Instruct",
    "tiny": False,
    "backend": "openai",
    "endpoint": "http://vllm-fast:8000",
}


def test_entries_run_in_process_unless_they_name_another_backend():
    registry = ModelRegistry.load(PROJECT_REGISTRY)

    assert {spec.backend for spec in registry} == {"transformers"}
    assert all(spec.endpoint is None for spec in registry)


def test_openai_entry_names_its_server_and_the_model_it_asks_for(tmp_path):
    entries = [
        OPENAI_ENTRY,
        OPENAI_ENTRY | {"id": "renamed", "endpoint": "https://fleet.example/qwen/", "served_model": "qwen-fast"},
    ]
    registry = ModelRegistry.load(write_registry(tmp_path, entries))

    fleet, renamed = registry.get("fleet"), registry.get("renamed")
    assert (fleet.backend, fleet.endpoint, fleet.served_model_name) == (
        "openai",
        "http://vllm-fast:8000",
        "Qwen/Qwen3-VL-8B-Instruct",
    )
    assert renamed.served_model_name == "qwen-fast"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"endpoint": None}, "needs an endpoint"),
        ({"endpoint": "vllm-fast:8000"}, "http"),
        ({"endpoint": "ftp://vllm-fast"}, "http"),
        ({"endpoint": "http://vllm-fast:8000/v1"}, "without /v1"),
        ({"endpoint": "http://vllm-fast:8000?key=1"}, "base URL"),
        ({"served_model": ""}, "served_model"),
        ({"backend": "tgi"}, "backend"),
    ],
)
def test_openai_entry_without_a_usable_endpoint_is_rejected(tmp_path, change, complaint):
    path = write_registry(tmp_path, [{k: v for k, v in (OPENAI_ENTRY | change).items() if v is not None}])

    with pytest.raises(ModelLoadError, match=complaint):
        ModelRegistry.load(path)


def test_endpoint_on_an_in_process_entry_is_rejected(tmp_path):
    # Silently ignoring it would run the model here when the operator meant a server.
    path = write_registry(tmp_path, [TINY_ENTRY | {"endpoint": "http://vllm-fast:8000"}])

    with pytest.raises(ModelLoadError, match="backend 'openai'"):
        ModelRegistry.load(path)


def test_an_entry_is_built_by_one_builder_only(tmp_path):
    with pytest.raises(ModelLoadError, match="not both"):
        ModelRegistry.load(write_registry(tmp_path, [TINY_ENTRY | {"demo": True}]))


LINEAGE = {"base": "demo-qwen3vl", "data": "liked.jsonl", "data_digest": "ab" * 32, "steps": 40, "final_loss": 0.21}


def test_a_fine_tuned_entry_records_its_lineage(tmp_path):
    entry = TINY_ENTRY | {"id": "tuned", "tiny": False, "lineage": LINEAGE}
    registry = ModelRegistry.load(write_registry(tmp_path, [entry]))

    lineage = registry.get("tuned").lineage
    assert (lineage.base, lineage.steps, lineage.seed) == ("demo-qwen3vl", 40, 0)
    with pytest.raises(ModelLoadError, match="data_digest"):
        ModelRegistry.load(write_registry(tmp_path, [entry | {"lineage": LINEAGE | {"data_digest": "xyz"}}]))


def test_register_model_adds_or_replaces_an_entry_and_keeps_the_others(tmp_path):
    path = write_registry(tmp_path, [TINY_ENTRY, TINY_ENTRY | {"id": "other"}])
    tuned = ModelSpec.model_validate(TINY_ENTRY | {"id": "tuned", "tiny": False, "lineage": LINEAGE})

    assert register_model(path, tuned) is True
    assert register_model(path, tuned) is False  # already there as given: the file is not rewritten
    moved = tuned.model_copy(update={"source": "var/models/tuned-2"})
    assert register_model(path, moved) is True

    registry = ModelRegistry.load(path)
    assert registry.ids() == ["tiny", "other", "tuned"]
    assert registry.get("tuned") == moved
    assert [p.name for p in path.parent.iterdir()] == ["models.json"]


GUARD_ENTRY = {
    "id": "guard",
    "source": "var/models/guard",
    "architecture": "dense",
    "mode": "instruct",
    "tier": "guard",
    "text_only": True,
    "dtype": "float32",
    "max_new_tokens": 24,
    "temperature": 0.0,
    "tiny": True,
}


def test_project_registry_lists_a_text_and_an_image_guard_of_each_kind():
    registry = ModelRegistry.load(PROJECT_REGISTRY)

    guards = {spec.id: spec for spec in registry if spec.tier == "guard"}
    assert set(guards) == TINY_GUARD_IDS | REAL_GUARD_IDS
    text_guards = {spec.id for spec in guards.values() if spec.text_only}
    assert text_guards == {"tiny-qwen3guard", "Qwen/Qwen3Guard-Gen-0.6B", "Qwen/Qwen3Guard-Gen-4B"}
    for spec in guards.values():
        # A verdict is a few lines, read the same way every time.
        assert spec.mode == "instruct" and spec.temperature == 0.0 and spec.max_new_tokens <= 64
        assert (spec.max_pixels is None) == spec.text_only
    # The real guards come from the hub (never downloaded here); the tiny ones are built offline.
    assert registry.resolve_source("Qwen/Qwen3Guard-Gen-4B") == "Qwen/Qwen3Guard-Gen-4B"
    assert registry.resolve_source("qwen3vl-4b-imageguard") == "Qwen/Qwen3-VL-4B-Instruct"
    assert registry.resolve_source("tiny-qwen3guard") == str(PROJECT_ROOT / "var/models/tiny-qwen3guard")


def test_a_text_guard_takes_no_image_budget_and_a_model_that_sees_needs_one(tmp_path):
    guard = ModelRegistry.load(write_registry(tmp_path, [GUARD_ENTRY])).get("guard")
    assert (guard.text_only, guard.max_pixels, guard.min_pixels) == (True, None, None)

    with pytest.raises(ModelLoadError, match="max_pixels.*no images"):
        ModelRegistry.load(write_registry(tmp_path, [GUARD_ENTRY | {"max_pixels": 65536}]))
    without_budget = {k: v for k, v in TINY_ENTRY.items() if k not in ("max_pixels", "min_pixels")}
    with pytest.raises(ModelLoadError, match="max_pixels and min_pixels missing"):
        ModelRegistry.load(write_registry(tmp_path, [without_budget]))


def test_a_text_only_model_cannot_be_a_tiers_reply_model(tmp_path):
    # The fast and deep tiers send pictures.
    with pytest.raises(ModelLoadError, match="only be a guard"):
        ModelRegistry.load(write_registry(tmp_path, [GUARD_ENTRY | {"tier": "fast"}]))


def test_register_model_writes_a_text_guard_without_an_image_budget(tmp_path):
    path = write_registry(tmp_path, [TINY_ENTRY])
    guard = ModelSpec.model_validate(GUARD_ENTRY)

    assert register_model(path, guard) is True

    written = json.loads(path.read_text())["models"][-1]
    assert "max_pixels" not in written and "min_pixels" not in written
    assert ModelRegistry.load(path).get("guard") == guard
