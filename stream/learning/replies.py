"""Target replies for synthetic training items: true statements about a picture, in character.

Pure: a reply is built from the picture's known facts (`PictureFacts`), the persona and a
random source, in the reply format the fast tier parses (`stream.persona.read_reply`):
``[emotion] `` then ``[think] `` when the item needs the deep tier (or ``[draw] `` when the
fan asks her to draw), then one or two short sentences that name the dominant colour (in the
fan's language), the shapes or the comment wall, and address the fan by name. After
``[draw]`` the sentence is her idea for the picture she will draw: the fan's colour and
shapes. The same vocabularies let oracle tests check a model's answer against the truth
(`names_colour`, `names_comment_wall`).
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import asdict, dataclass

from stream.persona import DEEP_TAG, DRAW_TAG, Persona

LANGS = ("en", "zh", "ja")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black")
SHAPES = ("star", "heart", "circle")

# How each colour is said. The first spelling is the one replies use; the others are also
# recognised when checking a model's answer.
COLOUR_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "red": {"en": ("red",), "zh": ("红色",), "ja": ("赤",)},
    "orange": {"en": ("orange",), "zh": ("橙色", "橘色"), "ja": ("オレンジ",)},
    "yellow": {"en": ("yellow",), "zh": ("黄色",), "ja": ("黄色",)},
    "green": {"en": ("green",), "zh": ("绿色",), "ja": ("緑",)},
    "blue": {"en": ("blue",), "zh": ("蓝色",), "ja": ("青",)},
    "purple": {"en": ("purple",), "zh": ("紫色",), "ja": ("紫",)},
    "pink": {"en": ("pink",), "zh": ("粉色",), "ja": ("ピンク",)},
    "white": {"en": ("white",), "zh": ("白色",), "ja": ("白",)},
    "black": {"en": ("black",), "zh": ("黑色",), "ja": ("黒",)},
}
SHAPE_NAMES: dict[str, dict[str, str]] = {
    "star": {"en": "stars", "zh": "星星", "ja": "星"},
    "heart": {"en": "hearts", "zh": "爱心", "ja": "ハート"},
    "circle": {"en": "circles", "zh": "圆圈", "ja": "丸"},
}
_AND = {"en": " and ", "zh": "和", "ja": "と"}
# How she greets a fan her memory says she has met before, at the start of her answer.
WELCOME_BACK = {"en": "Welcome back!", "zh": "欢迎回来！", "ja": "おかえり！"}
COMMENT_WALL_NAMES = {"en": ("comment wall",), "zh": ("弹幕",), "ja": ("弾幕",)}

# Longest reply body (after the tags) per language: the demo model is tiny.
MAX_BODY_CHARS = {"en": 80, "zh": 60, "ja": 60}

# One template list per situation and language. Fields: {name}, {colour}, {a_colour}
# (English, with its article), {shapes}.
_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "drawing": {
        "en": ("{name}, {a_colour} picture with {shapes}!", "So {colour}! I see {shapes}, {name}!"),
        "zh": ("{name}，这幅{colour}的画里有{shapes}！", "哇，{colour}的画！还有{shapes}，谢谢{name}！"),
        "ja": ("{name}さん、{colour}の絵に{shapes}！かわいい！", "わあ、{colour}の絵！{shapes}もある、{name}さん！"),
    },
    "maths": {
        "en": ("{name}, a sum on {a_colour} picture! Let me think it through.",),
        "zh": ("{name}，{colour}的画上有一道算术题，让我想想！",),
        "ja": ("{name}さん、{colour}の絵に計算問題！ちょっと考えるね。",),
    },
    "wall": {
        "en": ("{name}, a comment wall on {colour}! Thanks for the love!",),
        "zh": ("{name}，{colour}背景的弹幕墙，好热闹！",),
        "ja": ("{name}さん、{colour}背景の弾幕だね！ありがとう！",),
    },
    # Her idea for the picture a fan asked her to draw (the draw tier's prompt): their colour and shapes.
    "draw": {
        "en": ("I'll draw it {colour} like yours, with {shapes}, {name}!",
               "A {colour} picture with {shapes} for {name}!"),
        "zh": ("给{name}画一幅{colour}的画，还有{shapes}！", "{name}，我来画{colour}的，加上{shapes}！"),
        "ja": ("{name}さんに{colour}の絵を描くね、{shapes}も！", "{colour}で{shapes}の絵、{name}さんに描くね！"),
    },
    "dense_wall": {
        "en": ("Wow {name}, such a dense comment wall on {colour}! Let me read it.",),
        "zh": ("{name}，好密的弹幕墙！{colour}背景，让我仔细看看。",),
        "ja": ("{name}さん、弾幕がびっしり！{colour}背景、じっくり見るね。",),
    },
}


@dataclass(frozen=True)
class PictureFacts:
    """What is true about a synthetic item, recorded when it is drawn."""

    kind: str  # "fan_image" | "danmaku_screenshot"
    colour: str  # the dominant colour, one of COLOURS
    shapes: tuple[str, ...]  # kinds of shapes drawn (each at least twice), sorted; () on a wall
    dense: bool  # a densely packed comment wall; False for drawings
    lang: str  # the language of the fan's text, and of the reply; "en" when there is no text
    name: str  # the fan's display name
    text: str | None = None  # what the fan wrote
    question: str | None = None  # a sum in the fan's text, e.g. "12 + 30"
    answer: int | None = None  # its result
    memory: str | None = None  # what her prompt said of the fan (fan memory), None when nothing
    regular: bool = False  # the prompt remembered the fan from before: she welcomes them back
    draw: bool = False  # the fan's text asks her to draw something: she answers [draw] and her idea

    def to_json(self) -> dict:
        return {**asdict(self), "shapes": list(self.shapes)}

    @classmethod
    def from_json(cls, data: dict) -> PictureFacts:
        return cls(**{**data, "shapes": tuple(data["shapes"])})


def expected_emotion(facts: PictureFacts) -> str:
    if facts.draw:
        return "excited"
    if facts.question:
        return "thinking"
    if facts.kind == "danmaku_screenshot":
        return "surprised" if facts.dense else "excited"
    return "shy" if "heart" in facts.shapes else "happy"


def needs_thought(facts: PictureFacts) -> bool:
    """The verdict a good fast model gives: maths and dense walls go to the deep tier."""
    return facts.question is not None or (facts.kind == "danmaku_screenshot" and facts.dense)


def situation(facts: PictureFacts) -> str:
    if facts.kind == "danmaku_screenshot":
        return "dense_wall" if facts.dense else "wall"
    if facts.draw:
        return "draw"
    return "maths" if facts.question else "drawing"


def compose_reply(facts: PictureFacts, persona: Persona, rng: random.Random) -> str:
    """The target answer for an item: tags, then a true, short, in-character body."""
    lang = facts.lang
    colour = COLOUR_NAMES[facts.colour][lang][0]
    shapes = _AND[lang].join(SHAPE_NAMES[s][lang] for s in facts.shapes)
    template = rng.choice(_TEMPLATES[situation(facts)][lang])
    a_colour = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour}"
    body = template.format(name=facts.name, colour=colour, a_colour=a_colour, shapes=shapes)
    if facts.regular:
        body = f"{WELCOME_BACK[lang]} {body}"
    deep = needs_thought(facts)
    # A catchphrase on plain answers only: a [think] answer is a short "let me look", a [draw]
    # answer her idea for the picture.
    if not deep and not facts.draw and rng.random() < 0.7:
        fitting = [
            c for c in persona.catchphrases
            # A catchphrase that names a colour would make the reply's colour ambiguous.
            if len(body) + 1 + len(c) <= MAX_BODY_CHARS[lang] and not colours_named(c)
        ]
        if fitting:
            body = f"{body} {rng.choice(fitting)}"
    # NFKC, as read_reply normalises: the model learns exactly the text the overlay shows.
    body = unicodedata.normalize("NFKC", body)
    tag = f"{DEEP_TAG} " if deep else f"{DRAW_TAG} " if facts.draw else ""
    return f"[{expected_emotion(facts)}] {tag}{body}"


def _spellings_pattern(spellings: tuple[str, ...]) -> re.Pattern[str]:
    # Latin words need word boundaries ("red" is not in "bored"); CJK words have none.
    parts = [rf"\b{re.escape(s)}\b" if s.isascii() else re.escape(s) for s in spellings]
    return re.compile("|".join(parts), re.IGNORECASE)


_COLOUR_PATTERNS = {
    colour: _spellings_pattern(tuple(s for names in by_lang.values() for s in names))
    for colour, by_lang in COLOUR_NAMES.items()
}
_WALL_PATTERN = _spellings_pattern(tuple(s for names in COMMENT_WALL_NAMES.values() for s in names))


def colours_named(text: str) -> set[str]:
    """The palette colours a text names, in any of the three languages."""
    text = unicodedata.normalize("NFKC", text)
    return {colour for colour, pattern in _COLOUR_PATTERNS.items() if pattern.search(text)}


def names_colour(reply_text: str, colour: str) -> bool:
    """True when the text names `colour`, and no other palette colour, in any language.

    Naming several colours does not count: an answer that lists the palette is not seeing.
    """
    if colour not in COLOUR_NAMES:
        raise ValueError(f"unknown colour {colour!r}; the palette is {', '.join(COLOURS)}")
    return colours_named(reply_text) == {colour}


def welcomes_back(reply_text: str) -> bool:
    """True when the answer greets the fan as one she has met before, in any of her languages."""
    text = unicodedata.normalize("NFKC", reply_text).lower()
    return any(unicodedata.normalize("NFKC", phrase).lower().rstrip("!！") in text for phrase in WELCOME_BACK.values())


def names_comment_wall(reply_text: str) -> bool:
    """True when the text calls the picture a comment wall (danmaku), in any language."""
    return bool(_WALL_PATTERN.search(unicodedata.normalize("NFKC", reply_text)))
