import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stream.errors import InvalidImage, ReasonCode
from stream.images import (
    ImageLimits,
    admit_image,
    decode_base64_image,
    fit_to_budget,
    flatten_to_rgb,
    thumbnail_data_url,
)

LIMITS = ImageLimits(max_bytes=2 * 1024 * 1024, max_decoded_pixels=4_000_000, max_pixels=256 * 256)


def encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims a huge image: the shape of a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_large_images_are_downscaled_to_the_budget_keeping_the_aspect_ratio():
    admitted = admit_image(encoded(Image.new("RGB", (1280, 720), "red")), LIMITS)
    w, h = admitted.size
    assert w * h <= LIMITS.max_pixels
    assert abs(w / h - 1280 / 720) < 0.02
    assert admitted.original_size == (1280, 720)


def test_transparency_is_flattened_to_rgb_on_white():
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    admitted = admit_image(encoded(img), LIMITS)
    assert admitted.image.mode == "RGB"
    assert admitted.image.getpixel((10, 10)) == (255, 255, 255)


def test_exif_orientation_turns_the_photo_upright():
    img = Image.new("RGB", (200, 100), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    admitted = admit_image(encoded(img, "JPEG", exif=exif), LIMITS)
    assert admitted.size == (100, 200)


def test_tiny_images_are_grown_to_the_models_minimum():
    admitted = admit_image(encoded(Image.new("RGB", (8, 8))), LIMITS)
    assert min(admitted.size) >= LIMITS.min_side


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"definitely not an image", ReasonCode.IMAGE_CORRUPT),
        (encoded(Image.new("RGB", (300, 300)))[:200], ReasonCode.IMAGE_CORRUPT),
        (png_header_only(50_000, 50_000), ReasonCode.IMAGE_BOMB),
        (encoded(Image.new("RGB", (64, 64)), "BMP"), ReasonCode.IMAGE_UNSUPPORTED_FORMAT),
        (encoded(Image.new("RGB", (4000, 20))), ReasonCode.IMAGE_BAD_SHAPE),
    ],
    ids=["garbage", "truncated", "bomb", "bmp", "sliver"],
)
def test_bad_images_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(InvalidImage) as info:
        admit_image(raw, LIMITS)
    assert info.value.reason == reason


def test_a_file_over_the_byte_limit_is_rejected_before_decoding():
    with pytest.raises(InvalidImage) as info:
        admit_image(b"\x00" * (LIMITS.max_bytes + 1), LIMITS)
    assert info.value.reason == ReasonCode.IMAGE_TOO_LARGE


def test_invalid_base64_is_a_corrupt_image():
    with pytest.raises(InvalidImage) as info:
        decode_base64_image("@@@not base64@@@")
    assert info.value.reason == ReasonCode.IMAGE_CORRUPT


def test_fit_to_budget_never_exceeds_it():
    for w, h in [(1920, 1080), (4000, 3000), (300, 900), (257, 256)]:
        fw, fh = fit_to_budget(w, h, 65536, 32)
        assert fw * fh <= 65536


def test_text_coverage_tells_a_packed_comment_wall_from_a_drawing():
    import random

    from producers.samples import draw_danmaku_screen, draw_fan_image
    from stream.images import text_coverage

    walls = [text_coverage(draw_danmaku_screen(random.Random(s), (1280, 720), dense=True)) for s in range(4)]
    drawings = [text_coverage(draw_fan_image(random.Random(s), (1280, 720))) for s in range(4)]
    assert min(walls) > 0.5 > 0.2 > max(drawings)


def test_admission_measures_text_coverage_before_downscaling():
    import random

    from producers.samples import draw_danmaku_screen, encode

    raw, _ = encode(draw_danmaku_screen(random.Random(1), (1920, 1080), dense=True), "PNG")
    limits = ImageLimits(max_bytes=8 << 20, max_decoded_pixels=24_000_000, max_pixels=65536)
    admitted = admit_image(raw, limits, measure_text_coverage=True)
    assert admitted.size[0] * admitted.size[1] <= 65536 and admitted.text_coverage > 0.5
    assert admit_image(raw, limits).text_coverage is None, "not measured unless asked for"


def gradient(low: float, high: float, side: int = 256, dtype=np.uint16) -> np.ndarray:
    """A square, dark on the left and bright on the right."""
    return np.tile(np.linspace(low, high, side).astype(dtype), (side, 1))


def contrast(image: Image.Image) -> tuple[float, float, float]:
    """Mean brightness of the darkest quarter (left), the brightest (right) and the whole picture."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    quarter = grey.shape[1] // 4
    return grey[:, :quarter].mean(), grey[:, -quarter:].mean(), grey.mean()


def thumbnail_of(image: Image.Image, side: int = 96) -> Image.Image:
    url = thumbnail_data_url(image, side)
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_a_full_range_16_bit_greyscale_png_keeps_its_contrast_in_admission_and_thumbnail():
    png = encoded(Image.fromarray(gradient(0, 65535)))
    assert Image.open(io.BytesIO(png)).mode == "I;16"
    admitted = admit_image(png, LIMITS)
    for picture in (admitted.image, thumbnail_of(admitted.image)):
        dark, bright, mean = contrast(picture)
        assert dark < 40 and bright > 215, (dark, bright)
        assert 110 < mean < 145, mean


def test_a_dark_16_bit_picture_stays_dark_rather_than_being_stretched():
    """12-bit samples in a 16-bit file are scaled by the file's range, as a viewer shows them."""
    dark, bright, _ = contrast(admit_image(encoded(Image.fromarray(gradient(0, 4095))), LIMITS).image)
    assert bright < 20 and dark < bright


def test_a_transparent_grey_value_of_a_16_bit_png_becomes_white():
    samples = np.zeros((64, 64), np.uint16)
    samples[16:48, 16:48] = 32768
    admitted = admit_image(encoded(Image.fromarray(samples), transparency=0), LIMITS)
    assert admitted.image.getpixel((2, 2)) == (255, 255, 255)
    assert admitted.image.getpixel((32, 32)) == (128, 128, 128)


@pytest.mark.parametrize(
    "image",
    [
        Image.frombytes("I;16B", (256, 256), gradient(0, 65535).astype(">u2").tobytes()),
        Image.fromarray(gradient(0, 65535, dtype=np.int32)),  # mode I
        Image.fromarray(gradient(0, 255, dtype=np.int32)),  # mode I holding 8-bit samples
        Image.fromarray(gradient(0.0, 1.0, dtype=np.float32)),  # mode F, the usual 0..1
        Image.fromarray(gradient(-3.5, 12.0, dtype=np.float32)),  # mode F, no usual range
    ],
    ids=["I;16B", "I-16-bit", "I-8-bit", "F-unit", "F-any"],
)
def test_wide_modes_are_scaled_to_8_bits_not_clipped(image):
    dark, bright, mean = contrast(flatten_to_rgb(image))
    assert dark < 40 and bright > 215, (image.mode, dark, bright)
    assert 110 < mean < 145, (image.mode, mean)
