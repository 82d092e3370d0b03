"""Synthetic training data whose truth is known, in Qwen3-VL's fine-tuning format.

Every item is drawn from its own facts (`PictureFacts`): a fan drawing with one clearly
dominant background colour from `PALETTE` and a few stars, hearts or circles, or a
comment-wall screenshot (sparse or dense) over a coloured video frame. The fan writes
in English, Chinese or Japanese (or nothing), sometimes a small sum; the target reply is
built by `stream.learning.replies` in the fan's language and says what is true.

    write_training_data(Path("var/train"), 400, seed=1, persona=persona)
    write_training_data(Path("var/holdout"), 40, seed=1, persona=persona, holdout=True)

writes ``data.jsonl``, ``facts.jsonl`` (the facts of each record, same order) and
``images/*.png``. Images are saved as the fast tier's model sees them: downscaled to its
pixel budget with the tier's own admission code. Item i of a seed is the same whatever the
count, and held-out items come from a separate random stream, so they never appear in a
training set of the same seed. `held_out_submissions` gives the same held-out items as
full-size Submissions, for oracle tests through the real services.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import orjson
from PIL import Image, ImageDraw, ImageFont

from producers.client import build_submission
from producers.samples import DANMAKU, FAN_NAMES
from stream.contracts import Submission
from stream.fans.profiles import FanProfile, describe
from stream.images import ImageLimits, admit_image
from stream.learning.dataset import IMAGE_TAG, write_dataset
from stream.learning.replies import COLOURS, LANGS, SHAPES, PictureFacts, compose_reply
from stream.persona import Persona, system_prompt, user_prompt

# Far apart in RGB (nearest neighbours ~100 apart), so each stays itself after downscaling.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 40),
    "green": (40, 165, 70),
    "blue": (40, 85, 215),
    "purple": (135, 55, 195),
    "pink": (250, 150, 195),
    "white": (245, 245, 245),
    "black": (20, 20, 24),
}
_LIGHT = {"orange", "yellow", "pink", "white"}  # comments on these are written in black
_JITTER = 18  # per channel: shades of a colour, never closer to another palette colour

DRAWING_SIZES = [(640, 480), (480, 640), (512, 512), (800, 450), (450, 800), (1024, 768), (600, 600)]
SCREEN_SIZES = [(1280, 720), (960, 540), (854, 480), (720, 1280), (1024, 576)]

FAN_TEXTS = {
    "en": ["I drew this for you!", "Do you like my drawing?", "Made this during your stream", "For Mirai!",
           "Here is my fan art"],
    "zh": ["我给你画的!", "喜欢我的画吗?", "看直播的时候画的", "送给未来!", "这是我的同人画"],
    "ja": ["描いてみました!", "私の絵どうですか?", "配信を見ながら描きました", "ミライちゃんへ!", "ファンアートです"],
}
WALL_TEXTS = {
    "en": ["Look at the chat!", "Chat right now:", "Everyone is cheering!"],
    "zh": ["看看弹幕!", "现在的弹幕:", "大家都在应援!"],
    "ja": ["コメント見て!", "今のコメント:", "みんな応援してる!"],
}
# Fans asking her to draw (each one a request `stream.draw.routing.draw_request` recognises).
DRAW_TEXTS = {
    "en": ["Draw me with my cat!", "Can you draw us watching the stars?", "Please draw me something cute!",
           "Draw yourself in this picture!", "Could you draw this pose?"],
    "zh": ["画一个我和你一起看星星", "帮我画一只猫吧!", "可以给我画一张画吗?", "把你画进这张图里!"],
    "ja": ["猫と私を描いて!", "星空を描いてほしいな!", "この写真に入って描いて!", "このポーズで描いて!"],
}
DRAW_SHARE = 0.2  # of training drawings with words and no sum: the fan asks her to draw
SUM_TEXTS = {
    "en": "Can you solve this? {a} + {b} = ?",
    "zh": "帮我算一下: {a} + {b} = ?",
    "ja": "これ解ける? {a} + {b} = ?",
}

# The random streams: training and held-out items never share a seed string.
TRAIN_STREAM = "train"
HOLDOUT_STREAM = "holdout"
HOLDOUT_DRAW_STREAM = "holdout-draw"


# What she answered before, in a regular's memory line (no colour: the answer must name this picture's).
PAST_ANSWERS = ("So cute!", "I love it, thank you!", "好可爱！谢谢你！", "かわいい！ありがとう！", "Ehehe, you made me smile!")
MEMORY_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # training prompts say "2 days ago" the same way every run


def with_memory(facts: PictureFacts, persona: Persona, rng: random.Random) -> PictureFacts:
    """The facts with what her prompt says of the fan: nothing (fan memory off), a first-timer, or a regular.

    The line is the one a tier builds (`stream.fans.profiles.describe` with the persona's
    templates), so the model learns to welcome back exactly the fans the tiers remember.
    """
    roll = rng.random()
    if roll < 0.4:
        return facts
    if roll < 0.7:
        return replace(facts, memory=describe(None, "now", MEMORY_NOW, persona.fan_memory, facts.name))
    lang = rng.choice(LANGS)
    profile = FanProfile(
        room="training", user_id="fan", display_name=facts.name,
        first_seen=MEMORY_NOW - timedelta(hours=rng.randrange(1, 400)),
        last_seen=MEMORY_NOW - timedelta(minutes=rng.randrange(2, 600)),
        items_sent=rng.randrange(1, 12), last_item_id="earlier",
        last_sent_kind=rng.choice(("fan_image", "danmaku_screenshot")),
        last_sent_text=rng.choice((None, *FAN_TEXTS[lang])), last_reply_text=rng.choice(PAST_ANSWERS),
    )
    return replace(facts, memory=describe(profile, "now", MEMORY_NOW, persona.fan_memory, facts.name), regular=True)


def item_rng(seed: int, stream: str, index: int) -> random.Random:
    # A string seed is hashed with SHA-512: the same on every run and platform.
    return random.Random(f"idolstream-training:{seed}:{stream}:{index}")


def draw_item(rng: random.Random, draw_share: float = 0.0) -> tuple[Image.Image, PictureFacts]:
    """One full-size synthetic picture and its facts (everything but the target reply).

    `draw_share`: of the drawings with words and no sum, the share whose fan asks her to
    draw; at 0 no random number is spent on it (held-out items stay what they were).
    """
    colour = rng.choice(COLOURS)
    name = rng.choice(FAN_NAMES)
    lang_pick = rng.random()
    lang = None if lang_pick < 0.15 else rng.choice(LANGS)
    if rng.random() < 0.35:
        dense = rng.random() < 0.5
        image = draw_comment_wall(rng, rng.choice(SCREEN_SIZES), colour, dense)
        text = rng.choice(WALL_TEXTS[lang]) if lang and rng.random() < 0.6 else None
        if text is None:
            lang = None
        facts = PictureFacts("danmaku_screenshot", colour, (), dense, lang or "en", name, text)
        return image, facts
    kinds = tuple(sorted(rng.sample(SHAPES, rng.choice([1, 1, 2]))))
    image = draw_fan_drawing(rng, rng.choice(DRAWING_SIZES), colour, kinds)
    question = answer = text = None
    draw = False
    if lang and rng.random() < 0.2:
        a, b = rng.randrange(1, 50), rng.randrange(1, 50)
        question, answer = f"{a} + {b}", a + b
        text = SUM_TEXTS[lang].format(a=a, b=b)
    elif lang and draw_share and rng.random() < draw_share:
        text, draw = rng.choice(DRAW_TEXTS[lang]), True
    elif lang:
        text = rng.choice(FAN_TEXTS[lang])
    return image, PictureFacts("fan_image", colour, kinds, False, lang or "en", name, text, question, answer,
                               draw=draw)


def _shade(rng: random.Random, colour: str) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-_JITTER, _JITTER))) for c in PALETTE[colour])


def draw_fan_drawing(rng: random.Random, size: tuple[int, int], colour: str, kinds: tuple[str, ...]) -> Image.Image:
    """A background in `colour` (a gentle gradient of its shades) with 2-3 of each shape kind in one other colour."""
    w, h = size
    top, bottom = _shade(rng, colour), _shade(rng, colour)
    img = Image.new("RGB", size, top)
    draw = ImageDraw.Draw(img)
    for y in range(0, h, 4):
        t = y / max(1, h - 1)
        draw.rectangle([0, y, w, y + 4], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    ink = PALETTE[rng.choice([c for c in COLOURS if c != colour])]
    scale = math.sqrt(w * h)
    for kind in kinds:
        for _ in range(rng.randint(2, 3)):
            # A star's points leave most of its circle empty: draw it larger to weigh the same.
            r = rng.uniform(0.09, 0.13) * scale * (1.3 if kind == "star" else 1.0)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            _SHAPE_DRAWERS[kind](draw, cx, cy, r, ink)
    return img


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill) -> None:
    points = [
        (cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
         cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5))
        for i in range(10)
    ]
    draw.polygon(points, fill=fill)


def _heart(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill) -> None:
    lobe = r * 0.5
    draw.ellipse([cx - r, cy - r * 0.75, cx, cy - r * 0.75 + 2 * lobe], fill=fill)
    draw.ellipse([cx, cy - r * 0.75, cx + r, cy - r * 0.75 + 2 * lobe], fill=fill)
    draw.polygon([(cx - r * 0.97, cy - r * 0.1), (cx + r * 0.97, cy - r * 0.1), (cx, cy + r)], fill=fill)


def _circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill) -> None:
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)


_SHAPE_DRAWERS = {"star": _star, "heart": _heart, "circle": _circle}


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_comment_wall(rng: random.Random, size: tuple[int, int], colour: str, dense: bool) -> Image.Image:
    """Comments flying over a video frame in `colour`: a few large ones, or packed rows of small type."""
    w, h = size
    img = Image.new("RGB", size, _shade(rng, colour))
    draw = ImageDraw.Draw(img)
    ink = (15, 15, 15) if colour in _LIGHT else (250, 250, 250)
    if dense:
        # Small, but still legible where the tier measures text (stream.images.text_coverage).
        line_h = max(16, min(w, h) // 24)
        rows = range(h // line_h)
    else:
        line_h = max(24, h // 12)
        rows = sorted(rng.sample(range(h // line_h), k=min(h // line_h, rng.randint(3, 5))))
    font = _font(line_h - 4)
    for row in rows:
        x = rng.randrange(-w // 4, w // 2) if dense else rng.randrange(0, w * 2 // 3)
        for _ in range(64 if dense else rng.randint(1, 2)):
            if x >= w:
                break
            text = rng.choice(DANMAKU)
            draw.text((x, row * line_h), text, fill=ink, font=font)
            x += int(draw.textlength(text, font=font)) + (rng.randrange(4, 20) if dense else rng.randrange(60, 200))
    return img


def dominant_colour(image: Image.Image) -> tuple[str, float]:
    """The palette colour most pixels are nearest to, and the share of pixels it takes."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32).reshape(-1, 3)
    palette = np.array([PALETTE[c] for c in COLOURS], dtype=np.int32)
    nearest = ((pixels[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    counts = np.bincount(nearest, minlength=len(COLOURS))
    best = int(counts.argmax())
    return COLOURS[best], float(counts[best] / len(nearest))


def png_bytes(image: Image.Image, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _submission(image: bytes, facts: PictureFacts, item_id: str, room: str) -> Submission:
    return build_submission(
        room=room, user_id=f"{facts.name.lower()}-fan", display_name=facts.name, image_bytes=image,
        mime="image/png", kind=facts.kind, text=facts.text, item_id=item_id,
        lang=facts.lang if facts.text else None,
    )


def training_record(image_ref: str, submission: Submission, persona: Persona, target: str,
                    memory: str | None = None) -> dict:
    """A record whose human turn is what the fast tier sends for `submission` (with `memory`), word for word."""
    return {
        "image": image_ref,
        "system": system_prompt(persona),
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TAG}\n{user_prompt(submission, None, memory)}"},
            {"from": "gpt", "value": target},
        ],
    }


def write_training_data(
    out_dir: Path, count: int, seed: int, persona: Persona, *, holdout: bool = False,
    max_pixels: int = ImageLimits().max_pixels, fan_memory: bool = True,
) -> Path:
    """Write `count` items to out_dir (data.jsonl, facts.jsonl, images/); returns the data.jsonl path.

    Deterministic for (seed, holdout): the same bytes every time. `max_pixels` is the fast
    tier's image budget; images are saved downscaled to it, as the tier would feed them.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    stream = HOLDOUT_STREAM if holdout else TRAIN_STREAM
    limits = ImageLimits(max_pixels=max_pixels)
    records, all_facts = [], []
    for index in range(count):
        rng = item_rng(seed, stream, index)
        image, facts = draw_item(rng, 0.0 if holdout else DRAW_SHARE)
        seen = admit_image(png_bytes(image, compress_level=1), limits).image  # the tier's own decode and downscale
        saved = png_bytes(seen)
        ref = f"images/{index:06d}.png"
        (out_dir / ref).write_bytes(saved)
        submission = _submission(saved, facts, f"{stream}-{seed}-{index}", "training")
        if fan_memory and not holdout:  # held-out items stay as the oracle tests send them: without memory
            facts = with_memory(facts, persona, random.Random(f"idolstream-memory:{seed}:{index}"))
        target = compose_reply(facts, persona, rng)
        records.append(training_record(ref, submission, persona, target, facts.memory))
        all_facts.append({**facts.to_json(), "image": ref})
    path = out_dir / "data.jsonl"
    write_dataset(path, records)
    (out_dir / "facts.jsonl").write_bytes(b"".join(orjson.dumps(f) + b"\n" for f in all_facts))
    return path


def read_facts(out_dir: Path) -> list[PictureFacts]:
    """The facts written beside a generated dataset, in record order."""
    lines = (Path(out_dir) / "facts.jsonl").read_bytes().splitlines()
    return [PictureFacts.from_json({k: v for k, v in orjson.loads(line).items() if k != "image"}) for line in lines]


def held_out_submissions(count: int, seed: int, room: str = "oracle") -> list[tuple[Submission, PictureFacts]]:
    """Held-out items as full-size PNG Submissions with their facts, for oracle tests.

    The same pictures and texts as `write_training_data(..., holdout=True)` with this seed,
    before the tier's downscaling; never in a training set of the same seed.
    """
    items = []
    for index in range(count):
        image, facts = draw_item(item_rng(seed, HOLDOUT_STREAM, index))
        items.append((_submission(png_bytes(image), facts, f"{HOLDOUT_STREAM}-{seed}-{index}", room), facts))
    return items


def held_out_draw_requests(count: int, seed: int, room: str = "draw") -> list[tuple[Submission, PictureFacts]]:
    """Held-out fan drawings whose fan asks her to draw, as full-size PNG Submissions with their facts.

    From a random stream of their own: never in a training set, nor among `held_out_submissions`.
    """
    items, index = [], 0
    while len(items) < count:
        image, facts = draw_item(item_rng(seed, HOLDOUT_DRAW_STREAM, index), draw_share=1.0)
        if facts.draw:
            items.append((_submission(png_bytes(image), facts, f"{HOLDOUT_DRAW_STREAM}-{seed}-{index}", room), facts))
        index += 1
    return items
