import io
import struct
import zlib

import pytest
from PIL import Image

from stream.errors import InvalidImage, ReasonCode
from stream.images import ImageLimits, admit_image, decode_base64_image, fit_to_budget

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
