"""The in-process runner on tiny checkpoints: batching, token accounting, the image-only path."""

from __future__ import annotations

import pytest
import transformers
from PIL import Image

from stream.models.errors import ModelLoadError, ModelRuntimeError
from stream.models.runtime import (
    IMAGE_TOKEN,
    GenerationRequest,
    GenerationResult,
    ImageOnlyProcessor,
    TransformersRunner,
)


def image_request(size: tuple[int, int], text: str, system: str = "You are Mika.") -> GenerationRequest:
    image = Image.effect_noise(size, 40).convert("RGB")
    return GenerationRequest(
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
        ],
        images=[image],
    )


@pytest.fixture(scope="module")
def fast_runner(tiny_registry):
    runner = TransformersRunner.load(tiny_registry.get("tiny-qwen3vl-moe"), tiny_registry.project_root)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def deep_runner(tiny_registry):
    runner = TransformersRunner.load(tiny_registry.get("tiny-qwen3vl-thinking"), tiny_registry.project_root)
    yield runner
    runner.close()


def test_batch_of_two_differently_sized_images_gets_two_replies(fast_runner):
    requests = [image_request((320, 240), "I drew you!"), image_request((90, 400), "谢谢 what is this merch?")]

    results = fast_runner.generate(requests)

    assert len(results) == 2
    for result in results:
        assert isinstance(result, GenerationResult)
        assert isinstance(result.text, str)
        assert result.prompt_tokens > 0
        assert 0 <= result.generated_tokens <= fast_runner.spec.max_new_tokens
        assert result.finish_reason in ("stop", "length")
        if result.finish_reason == "length":
            assert result.generated_tokens == fast_runner.spec.max_new_tokens
    # The larger image costs more visual tokens in the prompt.
    assert results[0].prompt_tokens != results[1].prompt_tokens


def test_batching_does_not_change_greedy_answers(fast_runner, deep_runner):
    first, second = image_request((320, 240), "hello!"), image_request((64, 300), "a much longer question, please")

    for runner in (fast_runner, deep_runner):
        assert runner.generate([first, second]) == runner.generate([first]) + runner.generate([second])


def test_text_only_and_image_requests_share_a_batch(fast_runner):
    text_only = GenerationRequest(messages=[{"role": "user", "content": "no picture today"}])

    results = fast_runner.generate([image_request((128, 128), "look"), text_only])

    assert len(results) == 2 and all(r.prompt_tokens > 0 for r in results)


def test_special_tokens_are_not_in_the_reply(fast_runner):
    for result in fast_runner.generate([image_request((200, 200), "hi")]):
        assert "<|im_end|>" not in result.text and "<|endoftext|>" not in result.text


def test_empty_batch_returns_nothing(fast_runner):
    assert fast_runner.generate([]) == []


def test_image_count_mismatch_is_a_runtime_error(fast_runner):
    request = image_request((64, 64), "two pictures?")
    broken = GenerationRequest(messages=request.messages, images=request.images * 2)

    with pytest.raises(ModelRuntimeError, match="image slots"):
        fast_runner.generate([broken])


def test_unescaped_image_pad_in_user_text_is_a_runtime_error(fast_runner):
    # Un-neutralised fan text adds an image slot with no image behind it.
    with pytest.raises(ModelRuntimeError):
        fast_runner.generate([image_request((64, 64), f"sneaky {IMAGE_TOKEN}")])


def test_image_only_processor_is_used_when_auto_processor_cannot_load(tiny_registry, monkeypatch):
    def no_torchvision(*args, **kwargs):
        raise ImportError("Qwen3VLVideoProcessor requires the Torchvision library")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_torchvision)

    runner = TransformersRunner.load(tiny_registry.get("tiny-qwen3vl-moe"), tiny_registry.project_root)
    try:
        assert runner.processor_kind == "image-only"
        assert len(runner.generate([image_request((100, 100), "hi")])) == 1
    finally:
        runner.close()


def test_image_only_processor_expands_each_image_to_its_grid(moe_dir):
    processor = ImageOnlyProcessor.from_pretrained(moe_dir)
    prompts = [
        processor.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
        for r in (image_request((320, 240), "a"), image_request((64, 256), "a longer text for the second one"))
    ]
    images = [Image.new("RGB", (320, 240)), Image.new("RGB", (64, 256))]

    inputs = processor(text=prompts, images=images, return_tensors="pt")

    grid = inputs["image_grid_thw"]
    expected = [int(thw.prod()) // processor.image_processor.merge_size**2 for thw in grid]
    image_id = processor.image_token_id
    assert [int((row == image_id).sum()) for row in inputs["input_ids"]] == expected
    assert inputs["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())
    assert inputs["mm_token_type_ids"].eq(1).sum(dim=1).tolist() == expected
    # Left padding: the shorter row starts with masked pad tokens and ends with the prompt.
    mask = inputs["attention_mask"]
    assert mask[:, -1].tolist() == [1, 1]
    assert 0 in mask[0].tolist() or 0 in mask[1].tolist()


def test_image_only_processor_respects_the_pixel_budget(moe_dir):
    processor = ImageOnlyProcessor.from_pretrained(moe_dir)
    budget = processor.image_processor.size["longest_edge"]

    inputs = processor(text=[f"<|vision_start|>{IMAGE_TOKEN}<|vision_end|>"], images=[Image.new("RGB", (1920, 1080))])

    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert h * w * processor.image_processor.patch_size**2 <= budget


def test_missing_checkpoint_directory_is_a_load_error(tiny_registry, tmp_path):
    spec = tiny_registry.get("tiny-qwen3vl-moe").model_copy(update={"source": str(tmp_path / "missing")})

    with pytest.raises(ModelLoadError, match="tiny-qwen3vl-moe"):
        TransformersRunner.load(spec, tiny_registry.project_root)


def test_uncached_hub_id_is_a_load_error_offline(tiny_registry):
    spec = tiny_registry.get("Qwen/Qwen3-VL-2B-Instruct").model_copy(update={"source": "idolstream-test/no-such-model"})

    with pytest.raises(ModelLoadError):
        TransformersRunner.load(spec, tiny_registry.project_root)


def test_sampling_spec_generates_within_its_token_limit(tiny_registry):
    spec = tiny_registry.get("tiny-qwen3vl-moe").model_copy(update={"temperature": 0.8, "max_new_tokens": 5})
    runner = TransformersRunner.load(spec, tiny_registry.project_root)
    try:
        results = runner.generate([image_request((96, 96), "sing!")] * 3)
    finally:
        runner.close()

    assert len(results) == 3 and all(r.generated_tokens <= 5 for r in results)
