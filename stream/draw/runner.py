"""The draw tier's model: a Qwen-Image pipeline loaded by registry entry, drawing per mode.

``DrawRunner`` loads ``DiffusionPipeline.from_pretrained(source)`` (and the entry's
ControlNet when it names one) once, and derives the other modes' pipelines from the
loaded weights with ``from_pipe`` (nothing is loaded twice):

* ``text_to_image``: the prompt alone;
* ``outpaint``: the fan's picture placed in the middle of a larger canvas; the pipeline
  draws the border (the mask) and the fan's pixels are pasted back exactly
  (``apply_overlay``: a decoder never gives back exact pixels);
* ``pose``: the ControlNet follows a control image derived from the fan's picture by
  edge detection (no detector weights to download);
* ``img2img``: the fan's picture, noised by the entry's strength, redrawn.

Steps, size, guidance and the wall-time deadline come from the entry's ``draw``
settings. A step callback stops the denoising once the deadline has passed, so a late
picture costs at most one more step. The seed comes from the request id: the same
request draws the same picture.

``encode_picture`` turns a picture into the data URL a reply carries, within its limit.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from stream.contracts import DrawRequest
from stream.models.errors import ModelLoadError
from stream.models.registry import DrawSettings, ModelSpec

log = logging.getLogger("idolstream.draw")

# Of the canvas, the share the fan's picture takes (per side) when she is drawn around it.
OUTPAINT_SHARE = 0.6
# The tiny VAE and the real one both scale by 8, and the transformer packs 2x2 latents.
SIZE_MULTIPLE = 16


class DrawFailed(Exception):
    """The pipeline raised while drawing (the fan gets her apology; the tier goes on)."""


@dataclass(frozen=True)
class Drawing:
    image: Image.Image
    steps_done: int
    steps_planned: int
    seconds: float
    interrupted: bool  # the deadline passed while drawing: the picture is unfinished


def request_seed(request_id: str) -> int:
    """A seed from the request id: a redelivered request draws the same picture."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def outpaint_canvas(picture: Image.Image, width: int, height: int,
                    share: float = OUTPAINT_SHARE) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int]]:
    """The fan's picture, scaled to ``share`` of the canvas, in the middle of a ``width`` x ``height`` canvas.

    Returns the canvas, the mask (white = to draw, black = the fan's pixels, kept) and the
    box the picture occupies. The border starts as the picture's edge colours stretched
    outwards, so the drawing continues it rather than a flat grey.
    """
    picture = picture.convert("RGB")
    scale = min(width * share / picture.width, height * share / picture.height)
    inner = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    placed = picture.resize(inner, Image.Resampling.LANCZOS)
    left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
    canvas = placed.resize((width, height), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(4))
    canvas.paste(placed, (left, top))
    mask = Image.new("L", (width, height), 255)
    box = (left, top, left + inner[0], top + inner[1])
    mask.paste(0, box)
    return canvas, mask, box


def control_image(picture: Image.Image, width: int, height: int) -> Image.Image:
    """Edges of the fan's picture at the drawing's size: bright lines on black, as edge ControlNets take."""
    grey = ImageOps.fit(picture.convert("L"), (width, height), Image.Resampling.LANCZOS)
    edges = grey.filter(ImageFilter.FIND_EDGES)
    return ImageOps.autocontrast(edges).convert("RGB")


def encode_picture(image: Image.Image, max_chars: int) -> str:
    """A WebP data URL of ``image`` of at most ``max_chars`` characters.

    Lossless when that fits; otherwise quality is lowered first, then the picture is scaled
    down; a picture that cannot fit even small raises ValueError.
    """
    picture = image.convert("RGB")
    first = True
    while True:
        # Lossless when it fits (small pictures: the fan's own pixels stay exact), then lossy.
        tries = [{"lossless": True}] if first else []
        first = False
        for options in [*tries, *({"quality": q} for q in (90, 75, 60, 45, 30))]:
            buffer = io.BytesIO()
            picture.save(buffer, format="WEBP", method=4, **options)
            url = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
            if len(url) <= max_chars:
                return url
        if min(picture.size) <= 32:
            raise ValueError(f"a {image.width}x{image.height} picture does not fit in {max_chars} characters")
        picture = picture.resize((max(16, picture.width * 3 // 4), max(16, picture.height * 3 // 4)),
                                 Image.Resampling.LANCZOS)


def img2img_strength(wanted: float, steps: int) -> tuple[float, int]:
    """The strength to pass for img2img, and the steps that will run.

    The pipeline skips ``int(steps - steps * strength)`` steps. None skipped: it starts from
    pure noise and the fan's picture is ignored; all skipped: nothing is drawn. So at least
    one of each (with one step only, there is no choice: it is drawn from noise). The
    strength is nudged below the exact fraction so float rounding cannot skip one step less.
    """
    if steps < 2:
        return 1.0, steps
    skipped = min(steps - 1, max(1, int(steps * (1 - wanted))))
    return (steps - skipped) / steps - 1e-6, steps - skipped


def _deadline_callback(deadline: float | None, done: list[int]):
    """A ``callback_on_step_end`` that counts steps and interrupts the pipeline past ``deadline`` (monotonic)."""
    def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        done[0] = step + 1
        if deadline is not None and time.monotonic() >= deadline:
            # diffusers' documented way to stop early: the remaining steps are skipped.
            pipe._interrupt = True
        return callback_kwargs
    return on_step_end


class DrawRunner:
    """A loaded draw pipeline for one registry entry; ``draw`` is blocking (run it in a thread)."""

    def __init__(self, spec: ModelSpec, project_root: str | Path) -> None:
        if spec.tier != "draw" or spec.draw is None:
            raise ModelLoadError(f"model {spec.id!r} is a {spec.tier} model, not a draw model")
        import torch
        from diffusers import DiffusionPipeline

        self.spec = spec
        self.settings: DrawSettings = spec.draw
        # float32 is what the weights load as anyway; naming it makes diffusers warn about casting.
        dtype = {} if spec.dtype == "float32" else {"torch_dtype": getattr(torch, spec.dtype)}
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        source = spec.resolve_source(Path(project_root))
        try:
            self.pipe = DiffusionPipeline.from_pretrained(source, **dtype)
            if self.device != "cpu":
                self.pipe = self.pipe.to(self.device)
            self.controlnet = None
            controlnet = spec.resolve_controlnet(Path(project_root))
            if controlnet is not None:
                from diffusers import QwenImageControlNetModel

                loaded = QwenImageControlNetModel.from_pretrained(controlnet, **dtype)
                self.controlnet = loaded.to(self.device) if self.device != "cpu" else loaded
        except Exception as exc:  # diffusers raises OSError, ValueError, EnvironmentError... for a bad directory
            raise ModelLoadError(f"draw model {spec.id!r} could not be loaded from {source}: {exc}") from exc
        self.pipe.set_progress_bar_config(disable=True)
        self._modes: dict[str, Any] = {"text_to_image": self.pipe}
        # Held while drawing: close() (a model switch) waits for the picture in progress.
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.spec.id

    def _pipeline(self, mode: str):
        """The pipeline for ``mode``, built once from the loaded weights."""
        if mode not in self._modes:
            import diffusers

            if mode == "outpaint":
                built = diffusers.QwenImageInpaintPipeline.from_pipe(self.pipe)
            elif mode == "img2img":
                built = diffusers.QwenImageImg2ImgPipeline.from_pipe(self.pipe)
            elif mode == "pose":
                if self.controlnet is None:
                    raise DrawFailed(f"draw model {self.spec.id!r} names no ControlNet: it cannot draw in a pose")
                built = diffusers.QwenImageControlNetPipeline.from_pipe(self.pipe, controlnet=self.controlnet)
            else:
                raise DrawFailed(f"unknown draw mode {mode!r}")
            built.set_progress_bar_config(disable=True)
            self._modes[mode] = built
        return self._modes[mode]

    def draw(self, request: DrawRequest, picture: Image.Image | None = None, deadline: float | None = None) -> Drawing:
        """Draw ``request`` (``picture``: the fan's, admitted, for the modes that use it).

        ``deadline`` is a ``time.monotonic()`` instant; past it the pipeline stops after the
        current step and the drawing comes back ``interrupted``. Any pipeline error is
        raised as DrawFailed.
        """
        import torch

        s = self.settings
        width, height = s.width, s.height
        if request.mode != "text_to_image" and picture is None:
            raise DrawFailed(f"mode {request.mode} draws from the fan's picture, and none was given")
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "num_inference_steps": s.steps,
            "true_cfg_scale": s.true_cfg_scale,
            "generator": torch.Generator(device="cpu").manual_seed(request_seed(request.request_id)),
        }
        if s.true_cfg_scale > 1.0:
            kwargs["negative_prompt"] = " "  # true CFG needs one; a blank one is Qwen-Image's default
        planned = s.steps
        overlay = None
        if request.mode == "outpaint":
            canvas, mask, _ = outpaint_canvas(picture, width, height)
            kwargs.update(image=canvas, mask_image=mask, strength=1.0)
            overlay = (mask, canvas)
        elif request.mode == "img2img":
            strength, planned = img2img_strength(s.img2img_strength, s.steps)
            kwargs.update(image=ImageOps.fit(picture.convert("RGB"), (width, height)), strength=strength)
        elif request.mode == "pose":
            kwargs.update(control_image=control_image(picture, width, height),
                          controlnet_conditioning_scale=s.controlnet_scale)
        done = [0]
        t0 = time.monotonic()
        with self._lock:
            if self.pipe is None:
                raise DrawFailed(f"draw model {self.spec.id!r} is closed")
            pipe = self._pipeline(request.mode)
            try:
                with torch.inference_mode():
                    image = pipe(**kwargs, callback_on_step_end=_deadline_callback(deadline, done)).images[0]
            except Exception as exc:
                raise DrawFailed(f"{type(exc).__name__}: {exc}"[:500]) from exc
        seconds = time.monotonic() - t0
        if overlay is not None:
            mask, canvas = overlay
            image = pipe.image_processor.apply_overlay(mask, canvas, image)
        # Stopped early, or finished after the deadline: either way too late to show.
        late = deadline is not None and time.monotonic() >= deadline
        return Drawing(image=image, steps_done=done[0], steps_planned=planned, seconds=seconds, interrupted=late)

    def close(self) -> None:
        with self._lock:
            self._modes.clear()
            self.pipe = None
            self.controlnet = None
