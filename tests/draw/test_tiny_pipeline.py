"""The tiny Qwen-Image pipeline: built offline, loaded like the real one, and it draws.

Everything here runs the real diffusers pipelines on CPU at toy sizes (a few seconds in
all); random weights draw noise-like pictures, so the checks are about what a fan would
notice: the size asked for, the same request drawing the same picture, the prompt and the
control image mattering, the fan's own pixels kept where she was not asked to draw.
"""

from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: nothing may come from the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
import torch
from diffusers import (
    DiffusionPipeline,
    QwenImageControlNetModel,
    QwenImageControlNetPipeline,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageImg2ImgPipeline,
    QwenImageInpaintPipeline,
    QwenImagePipeline,
)

from stream.draw.tiny import build_tiny_controlnet, build_tiny_draw_pipeline, template_problems

STEPS = 2
REQUEST = "draw me with my cat under the stars"


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_draw_pipeline(tmp_path_factory.mktemp("draw") / "tiny-qwen-image")


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_controlnet(tmp_path_factory.mktemp("draw") / "tiny-qwen-image-controlnet")


@pytest.fixture(scope="module")
def pipe(pipeline_dir: Path):
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def fan_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture no decoder reproduces by chance: every pixel random."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_saved_directory_loads_as_qwen_image_and_draws_the_asked_size(pipe, pipeline_dir):
    assert isinstance(pipe, QwenImagePipeline)
    components = {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert components <= {p.name for p in pipeline_dir.iterdir()}
    # No staging directory is left beside it.
    assert [p.name for p in pipeline_dir.parent.iterdir()] == [pipeline_dir.name]

    image = pipe(prompt=REQUEST, width=128, height=96, num_inference_steps=STEPS, generator=seeded()).images[0]

    assert isinstance(image, Image.Image)
    assert image.size == (128, 96)
    assert image.mode == "RGB"


def test_the_same_request_and_seed_draw_the_same_picture_and_another_prompt_another(pipe):
    def draw(prompt: str, seed: int = 0) -> np.ndarray:
        picture = pipe(prompt=prompt, width=64, height=64, num_inference_steps=STEPS, generator=seeded(seed))
        return pixels(picture.images[0])

    first = draw(REQUEST)
    assert np.array_equal(first, draw(REQUEST))
    assert not np.array_equal(first, draw("画一个我和你一起看星星"))
    assert not np.array_equal(first, draw(REQUEST, seed=1))


def test_only_the_fans_words_reach_the_denoiser_not_the_system_prompt(pipe):
    # The pipeline drops a fixed count of leading tokens, meant to be its system prompt:
    # what is left is the request and the template's closing, nothing of the system prompt.
    assert template_problems(pipe) == []
    embeds, _ = pipe.encode_prompt(REQUEST)
    closing = pipe.tokenizer(REQUEST + "<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    assert embeds.shape[1] == len(closing)


@pytest.mark.parametrize("pipeline_class", [QwenImageEditPipeline, QwenImageEditPlusPipeline])
def test_the_edit_templates_drop_exactly_their_system_prompt_too(pipe, pipeline_class):
    # They drop 64 tokens, the others 34. No processor: building one needs torchvision,
    # and the template check does not use it.
    edit = pipeline_class(processor=None, **pipe.components)
    assert template_problems(edit) == []


def test_the_controlnet_follows_the_control_image(pipeline_dir, controlnet_dir):
    controlnet = QwenImageControlNetModel.from_pretrained(controlnet_dir)
    pipe = QwenImageControlNetPipeline.from_pretrained(pipeline_dir, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    stroke = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(stroke).line([(8, 8), (56, 56)], fill="white", width=5)
    ring = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(ring).ellipse([16, 16, 48, 48], outline="white", width=5)

    def draw(control: Image.Image) -> Image.Image:
        return pipe(
            prompt=REQUEST, control_image=control, width=64, height=64, num_inference_steps=STEPS, generator=seeded()
        ).images[0]

    along_the_stroke = draw(stroke)
    assert along_the_stroke.size == (64, 64)
    assert np.array_equal(pixels(along_the_stroke), pixels(draw(stroke)))
    assert not np.array_equal(pixels(along_the_stroke), pixels(draw(ring)))


def test_outpainting_keeps_the_fans_pixels_outside_the_mask(pipe):
    # Another mode on the same loaded weights, as a tier would switch modes.
    pipe = QwenImageInpaintPipeline.from_pipe(pipe)
    # The fan's picture in the middle of a larger canvas; she draws on the border.
    canvas = fan_picture(96, 96)
    mask = Image.new("L", (96, 96), 255)
    ImageDraw.Draw(mask).rectangle([24, 24, 71, 71], fill=0)
    keep = np.asarray(mask) == 0

    drawn = pipe(
        prompt="put her next to me",
        image=canvas,
        mask_image=mask,
        strength=1.0,
        width=96,
        height=96,
        num_inference_steps=STEPS,
        generator=seeded(),
    ).images[0]
    # The decoder never gives back exact pixels: the fan's are pasted back outside the mask.
    shown = pipe.image_processor.apply_overlay(mask, canvas, drawn)

    assert shown.size == (96, 96)
    assert np.array_equal(pixels(shown)[keep], pixels(canvas)[keep])
    assert not np.array_equal(pixels(shown)[~keep], pixels(canvas)[~keep])


def test_img2img_draws_from_the_fans_picture(pipe):
    pipe = QwenImageImg2ImgPipeline.from_pipe(pipe)

    def redraw(picture: Image.Image) -> Image.Image:
        # The pipeline skips int(steps * (1 - strength)) steps: with none skipped it starts
        # from pure noise and the fan's picture is ignored (2 steps at strength 0.6 would).
        return pipe(
            prompt=REQUEST, image=picture, strength=0.5, width=64, height=64, num_inference_steps=STEPS,
            generator=seeded(),
        ).images[0]

    from_first = redraw(fan_picture(64, 64, seed=1))
    assert from_first.size == (64, 64)
    assert not np.array_equal(pixels(from_first), pixels(redraw(fan_picture(64, 64, seed=2))))
