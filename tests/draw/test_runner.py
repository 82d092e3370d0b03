"""DrawRunner on the tiny pipeline: what it hands the real diffusers pipelines, per mode.

The pipelines run for real (random weights, toy sizes); a pipeline's ``__call__`` is only
wrapped to record what the runner called it with.
"""

from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: nothing may come from the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import json
from datetime import timedelta

import numpy as np
import pytest
from diffusers import QwenImageControlNetPipeline
from PIL import Image, ImageDraw

from producers.client import build_submission
from stream.contracts import DrawRequest, Source, Timings, new_id, utcnow
from stream.draw.runner import DrawRunner, control_image
from stream.draw.tiny import build_tiny_controlnet, build_tiny_draw_pipeline
from stream.models.registry import ModelRegistry
from stream.reasons import RouteReason

WIDTH, HEIGHT = 64, 48
CONTROLNET_SCALE = 0.8


@pytest.fixture(scope="module")
def pose_runner(tmp_path_factory: pytest.TempPathFactory) -> DrawRunner:
    root = tmp_path_factory.mktemp("draw-runner")
    source = build_tiny_draw_pipeline(root / "tiny-qwen-image")
    controlnet = build_tiny_controlnet(root / "tiny-qwen-image-controlnet")
    entry = {
        "id": "pose", "source": str(source), "architecture": "dense", "tier": "draw", "dtype": "float32", "tiny": False,
        "draw": {"steps": 2, "width": WIDTH, "height": HEIGHT, "deadline_ms": 30_000, "controlnet": str(controlnet),
                 "controlnet_scale": CONTROLNET_SCALE},
    }
    path = root / "models.json"
    path.write_text(json.dumps({"models": [entry]}), encoding="utf-8")
    registry = ModelRegistry.load(path)
    runner = DrawRunner(registry.get("pose"), registry.project_root)
    yield runner
    runner.close()


@pytest.fixture
def pose_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments of every ControlNet pipeline call (the pipeline still draws)."""
    calls: list[dict] = []
    draw = QwenImageControlNetPipeline.__call__

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(QwenImageControlNetPipeline, "__call__", recording)
    return calls


def pose_request() -> DrawRequest:
    item = build_submission(room="room-pose", user_id="fan1", display_name="Hoshi", image_bytes=b"unused",
                            mime="image/png", text="draw me in this pose!", lang="en")
    now = utcnow()
    return DrawRequest(
        request_id=new_id(), item=item, prompt="her, dancing in this pose", mode="pose",
        reason=RouteReason.DRAW_REQUEST, language="en", requested_at=now, deadline_at=now + timedelta(seconds=60),
        holding_sent=True,
        fast_timings=Timings(item_created_at=item.created_at, queue_ms=0.0, admission_ms=1.0, inference_ms=5.0,
                             replied_at=now),
        source=Source(topic="fan.images", partition=0, offset=0, key="room-pose"),
    )


def pose(shape: str) -> Image.Image:
    """A fan's pose sketch: a white figure on black, as a stick figure or a ring."""
    picture = Image.new("RGB", (48, 40), "black")
    pen = ImageDraw.Draw(picture)
    if shape == "figure":
        pen.line([(24, 4), (24, 28), (12, 38)], fill="white", width=3)
        pen.line([(24, 28), (36, 38)], fill="white", width=3)
        pen.line([(10, 14), (38, 14)], fill="white", width=3)
    else:
        pen.ellipse([10, 6, 38, 34], outline="white", width=3)
    return picture


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_controlnet_is_given_the_edges_of_the_fans_picture_and_draws_after_them(pose_runner, pose_calls):
    request = pose_request()  # the same prompt and seed for both pictures
    figure, ring = pose("figure"), pose("ring")

    from_figure = pose_runner.draw(request, figure)
    from_ring = pose_runner.draw(request, ring)

    assert len(pose_calls) == 2
    given = [call["control_image"] for call in pose_calls]
    # What the ControlNet followed is the fan's picture's edges at the drawing's size...
    assert np.array_equal(pixels(given[0]), pixels(control_image(figure, WIDTH, HEIGHT)))
    assert np.array_equal(pixels(given[1]), pixels(control_image(ring, WIDTH, HEIGHT)))
    assert given[0].size == (WIDTH, HEIGHT) and pixels(given[0]).max() == 255
    assert not np.array_equal(pixels(given[0]), pixels(given[1]))
    # ...as strongly as the entry says, with the prompt and seed unchanged between the two.
    assert [call["controlnet_conditioning_scale"] for call in pose_calls] == [CONTROLNET_SCALE] * 2
    assert pose_calls[0]["prompt"] == pose_calls[1]["prompt"] == request.prompt
    # Only the fan's picture changed, and her picture changed with it.
    assert from_figure.image.size == from_ring.image.size == (WIDTH, HEIGHT)
    assert not np.array_equal(pixels(from_figure.image), pixels(from_ring.image))
    assert np.array_equal(pixels(from_figure.image), pixels(pose_runner.draw(request, figure).image))


def test_the_control_image_lights_the_fans_strokes_and_leaves_the_rest_dark():
    stroke = Image.new("RGB", (48, 40), "black")
    ImageDraw.Draw(stroke).line([(0, 20), (47, 20)], fill="white", width=4)

    edges = pixels(control_image(stroke, 48, 40))[:, :, 0]

    assert edges[16:25].max() == 255  # along the stroke's edges
    assert edges[:10].max() == 0 and edges[31:].max() == 0  # far from it
