"""Synthetic fan images, danmaku-wall screenshots and replies (some with a picture she drew), drawn with Pillow.

Deterministic per seed: varied sizes, aspect ratios, colours, shapes and text, in the
formats fans send (PNG, JPEG, WebP). Used by the demo, the tests and the benchmark.
"""

from __future__ import annotations

import base64
import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from producers.client import build_submission
from stream.images import thumbnail_data_url
from stream.reasons import RouteReason
from stream.contracts import Cue, Reply, Submission, Timings, UserRef, new_id, utcnow

FAN_NAMES = ["Aki", "Momo", "Renji", "Sora", "Yuki", "Haru", "Kaito", "Nana", "Lumi", "Taro"]
FAN_TEXTS = [
    "I drew you with Mochi!",
    "My new acrylic stand arrived!!",
    "Look at my desk setup for your stream",
    "Happy birthday Mirai!",
    None,
    "Is this parfait as good as the one you had?",
    "I edited us into the group photo, hehe",
    "Can you solve this one from my homework? 12 + 30 x 2 = ?",
    "Dear Mirai, I have watched every stream since your debut. When I moved to a new city last "
    "spring I knew nobody, and your evening streams kept me company while I unpacked boxes. "
    "This drawing is my thank-you for that year.",
]
DANMAKU = [
    "888888", "so cute!!", "Mirai-mode on!", "first time here", "wwwww", "kawaii",
    "what game is next?", "sing again pls", "GG", "love from Brazil", "Mochi!!!", "encore",
]
SIZES = [(640, 480), (1280, 720), (720, 1280), (512, 512), (1024, 768), (300, 900), (1920, 1080)]


@dataclass(frozen=True)
class SampleItem:
    kind: str
    image_bytes: bytes
    mime: str
    user_id: str
    display_name: str
    text: str | None

    def to_submission(self, room: str, **overrides) -> Submission:
        """A validated Submission of this sample for `room`; `overrides` replace its fields."""
        fields = dict(
            room=room, user_id=self.user_id, display_name=self.display_name, image_bytes=self.image_bytes,
            mime=self.mime, kind=self.kind, text=self.text,
        )
        return build_submission(**{**fields, **overrides})


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_fan_image(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    top, bottom = [tuple(rng.randrange(40, 256) for _ in range(3)) for _ in range(2)]
    img = Image.new("RGB", size, top)
    draw = ImageDraw.Draw(img)
    for y in range(0, h, 4):  # a vertical gradient, like a sky or a poster
        t = y / max(1, h - 1)
        draw.rectangle([0, y, w, y + 4], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randrange(3, 9)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(20, max(21, w // 3)), y0 + rng.randrange(20, max(21, h // 3))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour, outline=(0, 0, 0))
    draw.text((w * 0.05, h * 0.05), rng.choice(["MIRAI ♥", "for Mirai", "fan art", "#MiraiMode"]),
              fill=(255, 255, 255), font=_font(max(12, h // 12)), stroke_width=2, stroke_fill=(0, 0, 0))
    return img


def draw_danmaku_screen(rng: random.Random, size: tuple[int, int], dense: bool = False) -> Image.Image:
    """A comment wall; a dense one (small type, packed rows) is hard to read at a glance."""
    w, h = size
    img = Image.new("RGB", size, (16, 16, 24))
    draw = ImageDraw.Draw(img)
    line_h = max(10, h // 40) if dense else max(14, h // 18)
    font = _font(line_h - 4)
    for row in range(h // line_h):
        x = rng.randrange(-w // 4, w)
        while x < w:
            text = rng.choice(DANMAKU)
            colour = rng.choice([(255, 255, 255), (255, 220, 0), (120, 220, 255), (255, 120, 180)])
            draw.text((x, row * line_h), text, fill=colour, font=font)
            x += int(draw.textlength(text, font=font)) + (rng.randrange(4, 24) if dense else rng.randrange(30, 160))
    return img


def encode(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 85} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue(), {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]


def sample_item(seed: int) -> SampleItem:
    rng = random.Random(seed)
    kind = "danmaku_screenshot" if rng.random() < 0.3 else "fan_image"
    size = rng.choice(SIZES)
    if kind == "danmaku_screenshot":
        img = draw_danmaku_screen(rng, size, dense=rng.random() < 0.5)
    else:
        img = draw_fan_image(rng, size)
    data, mime = encode(img, rng.choice(["PNG", "JPEG", "WEBP"]))
    name = rng.choice(FAN_NAMES)
    text = None if kind == "danmaku_screenshot" else rng.choice(FAN_TEXTS)
    return SampleItem(kind, data, mime, f"{name.lower()}-{rng.randrange(1000)}", name, text)


EMOTIONS = ["happy", "excited", "shy", "surprised", "thinking", "sad", "neutral"]
MOTIONS = {"happy": "bounce", "excited": "jump", "shy": "hide_face", "surprised": "gasp",
           "thinking": "tilt_head", "sad": "droop", "neutral": "idle"}


def draw_picture(n: int, size: int = 256) -> Image.Image:
    """A picture 'she drew' (no model): a diagonal gradient in colours chosen by `n`, and a star."""
    rng = random.Random(f"picture-{n}")
    start, end = [tuple(rng.randrange(40, 216) for _ in range(3)) for _ in range(2)]
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for k in range(0, 2 * size, 2):  # anti-diagonals: from `start` top left to `end` bottom right
        t = k / (2 * size - 2)
        colour = tuple(int(a + (b - a) * t) for a, b in zip(start, end))
        draw.line([(k, 0), (0, k)], fill=colour, width=3)
    centre, outer, inner = size / 2, size * 0.3, size * 0.12
    points = [(centre + (outer if i % 2 == 0 else inner) * math.sin(i * math.pi / 5),
               centre - (outer if i % 2 == 0 else inner) * math.cos(i * math.pi / 5)) for i in range(10)]
    draw.polygon(points, fill=(255, 214, 0), outline=(120, 60, 0))
    return img


def picture_data_url(img: Image.Image, fmt: str = "PNG") -> str:
    """A picture as the data URL a reply carries (`Reply.picture`)."""
    data, mime = encode(img, fmt)
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def sample_reply(room: str, n: int, *, role: str = "answer", item_id: str | None = None,
                 text: str | None = None, thumbnail: bool = False, picture: bool = False) -> Reply:
    """A synthetic reply (no model) for exercising the gateway and the overlay page; with `picture`,
    it carries `draw_picture(n)` as a PNG data URL, as a reply of the draw tier does."""
    emotion = EMOTIONS[n % len(EMOTIONS)]
    now = utcnow()
    return Reply(
        reply_id=new_id(),
        item_id=item_id or f"{room}-item-{n}",
        room=room,
        role=role,
        tier="fast",
        route_reason=RouteReason.SIMPLE,
        model_id="sample",
        text=text or f"Reply number {n}: thank you so much for this one!",
        cue=Cue(emotion=emotion, motion=MOTIONS[emotion]),
        timings=Timings(item_created_at=now, queue_ms=0, admission_ms=0, inference_ms=0, replied_at=now),
        in_reply_to=UserRef(id=f"fan-{n}", display_name=f"Fan {n}"),
        thumbnail=thumbnail_data_url(draw_fan_image(random.Random(n), (320, 240)), 96) if thumbnail else None,
        picture=picture_data_url(draw_picture(n)) if picture else None,
    )
