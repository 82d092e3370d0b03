"""The training loop: labels on the assistant turns only, determinism, checkpoints that load.

The last tests ask the demo model (a small Qwen3-VL trained here from scratch on synthetic
pictures, built once per checkout), through the runner, about pictures it never saw: it must
name their colours, and swapping two requests' images must swap the colours in the answers.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from stream.learning.train import (
    IGNORE_INDEX,
    TrainConfig,
    assistant_labels,
    assistant_spans,
    collate,
    encode_example,
    load_processor,
    train,
)
from stream.models.registry import ModelSpec
from stream.models.runtime import GenerationRequest, TransformersRunner
from stream.models.tiny import build_tiny_checkpoint, check_checkpoint_consistency
from tests.conftest import PROJECT_ROOT

PIXELS = 64 * 64

# Ids chosen to be told apart at a glance: 1 = <|im_start|>, 2 = <|im_end|>, 7 8 = "assistant\n".
HEADER = [1, 7, 8]
END = 2


def test_labels_cover_each_assistant_answer_and_its_end_token_only():
    system = [1, 5, 8, 40, 41, 2, 9]
    user = [1, 6, 8, 50, 99, 99, 51, 2, 9]
    answer_1 = [60, 61, 62, 2]
    answer_2 = [70, 2]
    ids = system + user + HEADER + answer_1 + [9] + user + HEADER + answer_2 + [9]

    labels = assistant_labels(ids, HEADER, END)

    spans = assistant_spans(labels)
    assert [ids[a:b] for a, b in spans] == [answer_1, answer_2]
    assert all(label == IGNORE_INDEX for i, label in enumerate(labels) if not any(a <= i < b for a, b in spans))
    assert all(labels[i] == ids[i] for a, b in spans for i in range(a, b))


def test_an_unclosed_assistant_turn_is_labelled_to_the_end_and_no_header_labels_nothing():
    ids = [1, 6, 8, 50, 2, *HEADER, 60, 61]

    assert assistant_spans(assistant_labels(ids, HEADER, END)) == [(8, 10)]
    assert assistant_labels([1, 6, 8, 50, 2], HEADER, END) == [IGNORE_INDEX] * 5


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("dense-instruct", tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def processor(tiny_base: Path):
    return load_processor(tiny_base, PIXELS // 4, PIXELS)


def _picture(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (64, 64), colour)


def _conversation(answers: list[str]) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": [{"type": "text", "text": "You are Mirai."}]}]
    for index, answer in enumerate(answers):
        messages.append(
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Aki sent picture {index}."}]}
        )
        messages.append({"role": "assistant", "content": answer})
    return messages


def test_encoded_example_labels_exactly_the_rendered_answers(processor):
    answers = ["[happy] Aki, a red picture with stars!", "[shy] 谢谢Aki，好可爱！"]
    encoded = encode_example(processor, _conversation(answers), [_picture((255, 0, 0)), _picture((0, 0, 255))])

    tokenizer = processor.tokenizer
    spans = assistant_spans(encoded.labels.tolist())
    decoded = [tokenizer.decode(encoded.input_ids[a:b]) for a, b in spans]
    assert decoded == [answer + "<|im_end|>" for answer in answers]
    labelled = encoded.labels != IGNORE_INDEX
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((encoded.input_ids == image_token).sum()) == 2 * (64 // 32) ** 2  # both pictures are in the row
    assert not labelled[encoded.input_ids == image_token].any()
    assert not labelled[encoded.mm_token_type_ids != 0].any()
    expected = sum(len(tokenizer.encode(answer, add_special_tokens=False)) + 1 for answer in answers)
    assert int(labelled.sum()) == expected
    assert encoded.image_grid_thw.tolist() == [[1, 4, 4], [1, 4, 4]]


def test_an_example_without_an_answer_is_refused(processor):
    messages = _conversation(["unused"])[:-1]

    with pytest.raises(ValueError, match="assistant turn"):
        encode_example(processor, messages, [_picture((0, 0, 0))])


def test_a_batch_pads_rows_without_labels_and_keeps_images_in_row_order(processor):
    short = encode_example(processor, _conversation(["[happy] Red!"]), [_picture((255, 0, 0))])
    long = encode_example(
        processor, _conversation(["[happy] A long answer about a very blue picture!"]), [_picture((0, 0, 255))]
    )

    batch = collate([short, long], pad_id=processor.tokenizer.pad_token_id)

    n = len(short.input_ids)
    assert batch["input_ids"].shape == (2, len(long.input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert torch.equal(batch["pixel_values"], torch.cat([short.pixel_values, long.pixel_values]))


class _Example:
    def __init__(self, images: tuple[Path, ...], messages: list[dict]) -> None:
        self.images = images
        self.messages = messages


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> list[_Example]:
    folder = tmp_path_factory.mktemp("pictures")
    examples = []
    for index, (word, rgb) in enumerate([("red", (220, 30, 30)), ("blue", (30, 60, 220)), ("green", (30, 170, 60))]):
        path = folder / f"{index}.png"
        _picture(rgb).save(path)
        examples.append(_Example((path,), _conversation([f"[happy] Aki, a {word} picture!"])))
    return examples


def _config(seed: int) -> TrainConfig:
    return TrainConfig(steps=3, batch_size=2, warmup_steps=1, seed=seed, max_pixels=PIXELS, min_pixels=PIXELS // 4)


def test_training_is_deterministic_for_a_seed(tiny_base, small_set, tmp_path):
    first = train(tiny_base, small_set, tmp_path / "a", _config(seed=1))
    again = train(tiny_base, small_set, tmp_path / "b", _config(seed=1))
    other = train(tiny_base, small_set, tmp_path / "c", _config(seed=2))

    assert first.losses == again.losses
    weights = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert weights == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert weights != (tmp_path / "c" / "model.safetensors").read_bytes()
    assert first.losses != other.losses


def test_progress_is_reported_every_step_with_an_eta(tiny_base, small_set, tmp_path):
    seen = []

    result = train(tiny_base, small_set, tmp_path / "out", _config(seed=0), on_progress=seen.append)

    assert [p.step for p in seen] == [1, 2, 3]
    assert all(p.steps == 3 and p.loss > 0 and p.examples_per_s > 0 for p in seen)
    assert seen[-1].eta_s == 0 and seen[0].eta_s > 0
    assert result.examples_seen == 6 and result.losses == tuple(p.loss for p in seen)


def test_trained_checkpoint_is_a_complete_directory_that_replaces_the_old_one(tiny_base, small_set, tmp_path):
    out = tmp_path / "models" / "trained"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")

    train(tiny_base, small_set, out, _config(seed=0))

    names = {p.name for p in out.iterdir()}
    assert {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja", "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
    } <= names
    assert "stale.txt" not in names
    assert [p.name for p in out.parent.iterdir()] == ["trained"]  # no staging directory left behind
    check_checkpoint_consistency(out)
    assert json.loads((out / "preprocessor_config.json").read_text())["size"]["longest_edge"] == PIXELS
    spec = ModelSpec(
        id="trained", source=str(out), architecture="dense", mode="instruct", tier="fast", dtype="float32",
        max_pixels=PIXELS, min_pixels=PIXELS // 4, max_new_tokens=4, temperature=0.0,
    )
    runner = TransformersRunner.load(spec, tmp_path)
    [result] = runner.generate([GenerationRequest(_conversation(["x"])[:2], [_picture((220, 30, 30))])])
    assert result.generated_tokens >= 1


def test_assistant_loss_equals_the_models_own_loss(tiny_base, processor):
    from transformers import AutoModelForImageTextToText

    from stream.learning.train import assistant_loss

    model = AutoModelForImageTextToText.from_pretrained(tiny_base)
    rows = [
        encode_example(processor, _conversation(["[happy] Red!"]), [_picture((255, 0, 0))]),
        encode_example(processor, _conversation(["[happy] Blue!", "[shy] Thanks!"]), [_picture((0, 0, 255))] * 2),
    ]
    batch = collate(rows, pad_id=processor.tokenizer.pad_token_id)

    with torch.no_grad():
        ours = assistant_loss(model, batch)
        theirs = model(**batch, use_cache=False).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


# --- the demo model, trained from scratch ------------------------------------------------

HELD_OUT = 40


@pytest.fixture(scope="module")
def persona():
    from stream.persona import Persona

    return Persona.load(PROJECT_ROOT / "config" / "persona.json")


# The session's demo model: trained once (a few minutes on 2 cores) when var/ lacks it.
@pytest.mark.timeout(900)
def test_demo_model_names_the_colour_of_pictures_it_never_saw(demo_runner, persona):
    from stream.learning.demo_model import answer_held_out, score_replies

    score = score_replies(*answer_held_out(demo_runner, persona, HELD_OUT, seed=0))

    # A ninth of the answers would be right by chance (nine colours).
    assert score.colour_accuracy >= 0.9, score
    assert score.language >= 0.9 * HELD_OUT, score  # it answers in the fan's language


@pytest.mark.timeout(900)
def test_swapping_two_pictures_swaps_the_colours_in_the_answers(demo_runner, persona):
    from stream.learning.replies import names_colour

    from stream.learning.demo_model import held_out_requests

    runner, spec = demo_runner, demo_runner.spec
    pairs = held_out_requests(persona, spec, 16, seed=1)
    answers = [result.text for result in runner.generate([request for request, _ in pairs])]
    # Two pictures of different colours whose answers were right, fans of the same language.
    right = [i for i, (answer, (_, facts)) in enumerate(zip(answers, pairs)) if names_colour(answer, facts.colour)]
    a, b = next(
        (i, j) for i in right for j in right
        if pairs[i][1].colour != pairs[j][1].colour and pairs[i][1].lang == pairs[j][1].lang
    )
    (first, first_facts), (second, second_facts) = pairs[a], pairs[b]

    swapped = runner.generate(
        [
            GenerationRequest(first.messages, second.images),
            GenerationRequest(second.messages, first.images),
        ]
    )

    assert names_colour(swapped[0].text, second_facts.colour), (swapped[0].text, second_facts)
    assert names_colour(swapped[1].text, first_facts.colour), (swapped[1].text, first_facts)
