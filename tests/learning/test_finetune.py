"""`idolstream models finetune`: a registered model learns what fans liked and is registered with its lineage.

The base is the tiny random dense checkpoint; the dataset is a few dozen records whose
answers all use a made-up phrase. After a short fine-tuning the new registry entry,
loaded like any model, greedily says that phrase about a picture it never saw. Bad
datasets stop the command with file:line before anything is written.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stream.cli import main
from stream.learning.dataset import dataset_digest, write_dataset
from stream.models.registry import ModelRegistry
from stream.models.runtime import GenerationRequest, TransformersRunner
from tests.processes import registry_copy

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BASE_ID = "tiny-qwen3vl-dense"
# Eight tokens of the tiny tokenizer, a word no random or tiny model says by chance.
PHRASE = "Kiraboshi"
TARGET = f"[happy] {PHRASE}!"
NAMES = ["Aki", "Ben", "Chen", "Dana", "Eri", "Fay"]
COLOURS = [(230, 30, 30), (30, 60, 230), (30, 200, 60), (240, 220, 20)]
RECORDS = 24
STEPS = "30"
LR = "3e-3"


def _liked_dataset(directory: Path, records: list[dict] | None = None) -> Path:
    """RECORDS pictures of plain colours, each answered with TARGET, as JSONL beside its images."""
    (directory / "images").mkdir(parents=True, exist_ok=True)
    if records is None:
        records = []
        for index in range(RECORDS):
            Image.new("RGB", (64, 64), COLOURS[index % len(COLOURS)]).save(directory / "images" / f"{index:03}.png")
            records.append(
                {
                    "image": f"images/{index:03}.png",
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{NAMES[index % len(NAMES)]} sent a picture."},
                        {"from": "gpt", "value": TARGET},
                    ],
                }
            )
    path = directory / "liked.jsonl"
    write_dataset(path, records)
    return path


def _ask(spec, root: Path) -> str:
    runner = TransformersRunner.load(spec, root)
    try:
        request = GenerationRequest(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Gil sent a picture."}]}],
            [Image.new("RGB", (64, 64), (200, 40, 160))],  # a colour none of the training pictures has
        )
        return runner.generate([request])[0].text
    finally:
        runner.close()


@pytest.fixture(scope="module")
def finetuned(tiny_checkpoints, tmp_path_factory):
    """One full fine-tuning through the command line, shared by the tests that inspect its result."""
    root = tmp_path_factory.mktemp("project")
    registry_path = registry_copy(root)
    data = _liked_dataset(root / "data")
    out = root / "var" / "models" / "liked"
    project_registry = (PROJECT_ROOT / "config" / "models.json").read_bytes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))
        code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(out),
                     "--steps", STEPS, "--lr", LR, "--batch", "8"])
    assert (PROJECT_ROOT / "config" / "models.json").read_bytes() == project_registry
    return {"code": code, "root": root, "registry": registry_path, "data": data, "out": out}


def test_the_base_model_never_says_the_phrase(registry, tiny_checkpoints):
    assert PHRASE not in _ask(registry.get(BASE_ID), PROJECT_ROOT)


def test_the_finetuned_entry_says_the_liked_phrase_about_a_new_picture(finetuned):
    assert finetuned["code"] == 0
    registry = ModelRegistry.load(finetuned["registry"])
    digest = dataset_digest(finetuned["data"])
    spec = registry.get(f"{BASE_ID}-ft-{digest[:8]}")

    assert _ask(spec, registry.project_root) == TARGET


def test_the_new_entry_records_its_lineage_and_keeps_the_base_settings(finetuned):
    registry = ModelRegistry.load(finetuned["registry"])
    base = registry.get(BASE_ID)
    digest = dataset_digest(finetuned["data"])
    spec = registry.get(f"{BASE_ID}-ft-{digest[:8]}")

    assert spec.lineage.base == BASE_ID
    assert spec.lineage.data == str(finetuned["data"])
    assert spec.lineage.data_digest == digest
    assert spec.lineage.steps == int(STEPS)
    assert 0 < spec.lineage.final_loss < 3.0
    assert spec.local_dir(registry.project_root).resolve() == finetuned["out"].resolve()
    assert spec.source == "./var/models/liked"  # relative to the project root, so the project can move
    same = ("architecture", "mode", "tier", "dtype", "max_pixels", "min_pixels", "max_new_tokens", "temperature")
    assert {key: getattr(spec, key) for key in same} == {key: getattr(base, key) for key in same}
    assert not spec.tiny  # build-tiny must never rebuild it over the fine-tuned weights
    training = json.loads((finetuned["out"] / "training.json").read_text(encoding="utf-8"))
    assert training["base"] == BASE_ID and training["data_digest"] == digest
    assert not list(finetuned["out"].parent.glob(".liked.*"))  # no staging directory left behind


def test_finetuning_again_with_the_same_data_replaces_the_same_entry(finetuned, tmp_path):
    # The default id comes from the data: same base, same data, same id, no second entry.
    registry_before = ModelRegistry.load(finetuned["registry"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDOLSTREAM_REGISTRY_PATH", str(finetuned["registry"]))
        code = main(["models", "finetune", "--base", BASE_ID, "--data", str(finetuned["data"]),
                     "--out", str(tmp_path / "again"), "--steps", "1", "--batch", "4"])

    assert code == 0
    registry_after = ModelRegistry.load(finetuned["registry"])
    assert len(registry_after) == len(registry_before)
    digest = dataset_digest(finetuned["data"])
    assert registry_after.get(f"{BASE_ID}-ft-{digest[:8]}").lineage.steps == 1


def _record(image: str | list[str] | None, human: str, answer: str = TARGET) -> dict:
    record: dict = {"conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
    return record


ASKED = "<image>\nAki sent a picture."
BAD_DATASETS = {
    "a missing image": (_record("images/404.png", ASKED), 'image "images/404.png" does not exist'),
    "more images than tags": (
        _record(["images/000.png", "images/001.png"], ASKED), "1 <image> tag in the human turns but 2 images"
    ),
    "a tag without an image": (_record(None, ASKED), "1 <image> tag in the human turns but 0 images"),
    "an empty answer": (_record("images/000.png", ASKED, "  "), "turn 2 (gpt) is empty"),
}


@pytest.mark.parametrize("fault", list(BAD_DATASETS))
def test_a_bad_dataset_stops_with_file_and_line_and_writes_nothing(
    fault, tiny_checkpoints, tmp_path, monkeypatch, capsys
):
    registry_path = registry_copy(tmp_path)
    registry_bytes = registry_path.read_bytes()
    good = _liked_dataset(tmp_path / "data")
    records = [json.loads(line) for line in good.read_text(encoding="utf-8").splitlines()]
    bad, problem = BAD_DATASETS[fault]
    records[2] = bad  # line 3
    data = _liked_dataset(tmp_path / "data", records)
    out = tmp_path / "out"
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))

    code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(out)])

    assert code == 2
    err = capsys.readouterr().err
    assert f"{data}:3: " in err and problem in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))
    assert registry_path.read_bytes() == registry_bytes


def test_an_unknown_base_is_refused_with_the_known_ids(tmp_path, monkeypatch, capsys):
    registry_path = registry_copy(tmp_path)
    data = _liked_dataset(tmp_path / "data")
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))

    code = main(["models", "finetune", "--base", "no-such-model", "--data", str(data), "--out", str(tmp_path / "out")])

    assert code == 2
    err = capsys.readouterr().err
    assert "unknown model id 'no-such-model'" in err and BASE_ID in err
    assert not (tmp_path / "out").exists()


def test_the_out_directory_of_another_model_is_refused(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    registry_path = registry_copy(tmp_path)
    registry_bytes = registry_path.read_bytes()
    data = _liked_dataset(tmp_path / "data")
    base_dir = ModelRegistry.load(registry_path).get(BASE_ID).local_dir(tmp_path)
    weights = (base_dir / "model.safetensors").read_bytes()
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))

    code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(base_dir)])

    assert code == 2
    assert f"registry model {BASE_ID!r}" in capsys.readouterr().err
    assert (base_dir / "model.safetensors").read_bytes() == weights
    assert registry_path.read_bytes() == registry_bytes


def test_lora_merged_on_save_says_the_phrase_from_a_plain_checkpoint(tiny_checkpoints, tmp_path, monkeypatch):
    registry_path = registry_copy(tmp_path)
    data = _liked_dataset(tmp_path / "data")
    out = tmp_path / "var" / "models" / "liked-lora"
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))

    code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(out), "--lora",
                 "--lora-rank", "8", "--steps", "40", "--lr", "1e-2", "--batch", "8", "--id", "tiny-liked-lora"])

    assert code == 0
    registry = ModelRegistry.load(registry_path)
    spec = registry.get("tiny-liked-lora")
    assert spec.lineage.base == BASE_ID and spec.lineage.steps == 40
    assert _ask(spec, registry.project_root) == TARGET
    assert not list(out.glob("adapter*"))  # merged: nothing for peft to load
    tuned = load_file(out / "model.safetensors")
    base = load_file(registry.get(BASE_ID).local_dir(registry.project_root) / "model.safetensors")
    assert tuned.keys() == base.keys()
    changed = {name for name in base if not (tuned[name] == base[name]).all()}
    assert changed and all(".language_model.layers." in name and name.endswith("_proj.weight") for name in changed)
    assert json.loads((out / "training.json").read_text(encoding="utf-8"))["method"].startswith("lora")


def test_lora_without_peft_fails_clearly_and_writes_nothing(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    registry_path = registry_copy(tmp_path)
    registry_bytes = registry_path.read_bytes()
    data = _liked_dataset(tmp_path / "data")
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError

    code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(tmp_path / "out"), "--lora"])

    assert code == 2
    assert "--lora needs the peft package" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert registry_path.read_bytes() == registry_bytes


def test_lora_on_a_bfloat16_base_keeps_the_base_in_bfloat16_and_still_learns(tiny_checkpoints, tmp_path, monkeypatch):
    # A real 4B base is bfloat16 in the registry: under LoRA it trains in that dtype (half
    # the memory) with float32 adapters, and the merged checkpoint is saved in it.
    registry_path = registry_copy(tmp_path)
    raw = json.loads(registry_path.read_text(encoding="utf-8"))
    for entry in raw["models"]:
        if entry["id"] == BASE_ID:
            entry["dtype"] = "bfloat16"
    registry_path.write_text(json.dumps(raw), encoding="utf-8")
    data = _liked_dataset(tmp_path / "data")
    out = tmp_path / "var" / "models" / "liked-bf16"
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))

    code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(out), "--lora",
                 "--steps", "40", "--lr", "1e-2", "--batch", "8", "--id", "tiny-liked-bf16", "--device", "cpu"])

    assert code == 0
    training = json.loads((out / "training.json").read_text(encoding="utf-8"))
    assert (training["config"]["dtype"], training["config"]["device"]) == ("bfloat16", "cpu")
    assert {tensor.dtype for tensor in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    registry = ModelRegistry.load(registry_path)
    assert _ask(registry.get("tiny-liked-bf16"), registry.project_root) == TARGET


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_for_on_a_machine_without_one_is_refused_before_anything_is_written(
    tiny_checkpoints, tmp_path, monkeypatch, capsys
):
    registry_path = registry_copy(tmp_path)
    registry_bytes = registry_path.read_bytes()
    data = _liked_dataset(tmp_path / "data")
    monkeypatch.setenv("IDOLSTREAM_REGISTRY_PATH", str(registry_path))

    code = main(["models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(tmp_path / "out"),
                 "--device", "cuda"])

    assert code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert registry_path.read_bytes() == registry_bytes
