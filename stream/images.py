"""Image admission: from the bytes a fan sent to an RGB picture within the tier's budget.

Order matters: size is checked before decoding, the header's pixel count before the
pixels are loaded (a decompression bomb is refused before it costs memory), and only
then is the image decoded, turned upright (EXIF), flattened to 8-bit RGB (wide samples
scaled, not clipped) and downscaled.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stream.contracts import bare_base64
from stream.errors import InvalidImage, ReasonCode

# Formats a fan's browser or phone produces; anything else is refused before decoding.
ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 4 * 1024 * 1024
    # Pixels the header may declare. Beyond this a file is treated as a decompression bomb.
    max_decoded_pixels: int = 24_000_000
    # The tier's image budget: the admitted image has at most this many pixels.
    max_pixels: int = 256 * 256
    # Qwen3-VL needs at least one 32x32 merge window per side and tolerates aspect <= 200.
    min_side: int = 32
    max_aspect_ratio: float = 50.0


@dataclass(frozen=True)
class AdmittedImage:
    image: Image.Image
    format: str
    original_size: tuple[int, int]
    text_coverage: float | None  # measured before downscaling when asked, see `text_coverage`

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def decode_base64_image(data: str) -> bytes:
    """The image file's bytes from any accepted form of a submission's image.data (see ImagePayload)."""
    try:
        return base64.b64decode(bare_base64(data), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(ReasonCode.IMAGE_CORRUPT, f"image data is not valid base64: {exc}") from exc


def fit_to_budget(width: int, height: int, max_pixels: int, min_side: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio and at most `max_pixels` pixels."""
    if width * height <= max_pixels:
        scaled = (width, height)
    else:
        scale = math.sqrt(max_pixels / (width * height))
        scaled = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    # Too small a side would be upscaled by the processor anyway; do it here, visibly.
    grow = max(1.0, min_side / min(scaled))
    return (math.ceil(scaled[0] * grow), math.ceil(scaled[1] * grow))


def admit_image(raw: bytes, limits: ImageLimits, measure_text_coverage: bool = False) -> AdmittedImage:
    """Decode and normalise an image, or raise InvalidImage with the reason.

    `measure_text_coverage` also measures `text_coverage` on the full-size image (a few
    milliseconds), for callers whose routing reads it.
    """
    if len(raw) > limits.max_bytes:
        raise InvalidImage(
            ReasonCode.IMAGE_TOO_LARGE, f"{len(raw)} bytes is over the {limits.max_bytes}-byte limit"
        )
    # Pillow's own bomb guard is a warning below 2x its limit; make both halves errors.
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limits.max_decoded_pixels
            try:
                img = Image.open(io.BytesIO(raw))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise InvalidImage(ReasonCode.IMAGE_BOMB, str(exc)) from exc
            except UnidentifiedImageError as exc:
                raise InvalidImage(ReasonCode.IMAGE_CORRUPT, "not a recognisable image file") from exc
            if img.format not in ALLOWED_FORMATS:
                raise InvalidImage(
                    ReasonCode.IMAGE_UNSUPPORTED_FORMAT,
                    f"{img.format} is not accepted (use PNG, JPEG, WebP or GIF)",
                )
            fmt = img.format
            width, height = img.size
            if width * height > limits.max_decoded_pixels:
                raise InvalidImage(
                    ReasonCode.IMAGE_BOMB,
                    f"{width}x{height} declares {width * height} pixels, over {limits.max_decoded_pixels}",
                )
            if max(width, height) / max(1, min(width, height)) > limits.max_aspect_ratio:
                raise InvalidImage(
                    ReasonCode.IMAGE_BAD_SHAPE,
                    f"{width}x{height} is more elongated than {limits.max_aspect_ratio:g}:1",
                )
            try:
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = flatten_to_rgb(img)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise InvalidImage(ReasonCode.IMAGE_BOMB, str(exc)) from exc
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise InvalidImage(ReasonCode.IMAGE_CORRUPT, f"image data is damaged: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    coverage = text_coverage(rgb) if measure_text_coverage else None
    target = fit_to_budget(rgb.width, rgb.height, limits.max_pixels, limits.min_side)
    if target != rgb.size:
        rgb = rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return AdmittedImage(image=rgb, format=fmt, original_size=(width, height), text_coverage=coverage)


# Modes whose samples do not fit in 8 bits. `convert("RGB")` clips them at 255, so a
# 16-bit greyscale PNG (0..65535) comes out almost white: they are scaled first.
WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def flatten_to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB picture of any decoded image: wide samples scaled, transparency on white.

    Stickers and drawings often have transparency; white is what a fan's viewer shows behind it.
    """
    if img.mode in WIDE_MODES:
        img = _scale_to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """A greyscale `L` image of a wide one, scaled from its nominal range to 0..255.

    The range is 0..65535 for the 16-bit modes. `I` and `F` carry no range of their own:
    theirs is the smallest of 0..1 (`F` only), 0..255 and 0..65535 that holds every sample,
    else the image's own min..max. Scaling by the nominal range keeps a dark picture dark
    and a full-range one full-range. A transparent grey value (PNG's tRNS) becomes white.
    """
    samples = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(samples.min()), float(samples.max())
    if img.mode.startswith("I;16"):
        span = (0.0, 65535.0)
    else:
        tops = ((1.0,) if img.mode == "F" else ()) + (255.0, 65535.0)
        fits = [top for top in tops if low >= 0 and high <= top]
        span = (0.0, fits[0]) if fits else (low, max(high, low + 1.0))
    grey = np.rint((samples - span[0]) * (255.0 / (span[1] - span[0])))
    grey = np.clip(grey, 0, 255).astype(np.uint8)  # only float rounding can step outside
    transparent = img.info.get("transparency")
    if isinstance(transparent, int | float):
        grey[np.asarray(img) == transparent] = 255
    return Image.fromarray(grey)


def text_coverage(image: Image.Image, width: int = 512, block: int = 16, contrast: int = 48) -> float:
    """Share of the picture covered by text-like detail (0..1).

    On a greyscale copy `width` pixels wide, a `block`-pixel square counts as covered when
    at least 3% of its horizontal neighbour pairs differ by `contrast` or more: glyph
    strokes do, gradients and flat fills do not. A packed comment wall covers most blocks;
    a drawing or photo covers few. Costs a few milliseconds at any upload size.
    """
    grey = image.convert("L")
    height = max(block, round(grey.height * width / max(1, grey.width)))
    pixels = np.asarray(grey.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    edges = np.zeros(pixels.shape, dtype=bool)
    edges[:, 1:] = np.abs(np.diff(pixels, axis=1)) >= contrast
    rows = (height // block) * block
    per_block = edges[:rows].reshape(rows // block, block, width // block, block).mean(axis=(1, 3))
    return float((per_block >= 0.03).mean())


THUMBNAIL_PREFIX = "data:image/jpeg;base64,"


def thumbnail_data_url(image: Image.Image, side: int, quality: int = 70) -> str:
    """A small JPEG of an admitted image as a data URL, for the overlay bubble (no fetch)."""
    thumb = ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=quality, optimize=True)
    return THUMBNAIL_PREFIX + base64.b64encode(buffer.getvalue()).decode()
