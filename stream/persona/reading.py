"""Untrusted text made inert, and a model's raw answer read into what the overlay shows.

Fan text is untrusted: it may carry chat-template control tokens (``<|im_start|>``,
``<|image_pad|>``, ``<think>``) that the tokenizer would turn into real control ids.
`neutralise_fan_text` makes them inert text before anything is templated.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from stream.contracts import Cue, Emotion
from stream.persona.card import Persona

EMOTIONS: tuple[str, ...] = Emotion.__args__  # type: ignore[attr-defined]

# `<|anything|>` as Qwen's special tokens are spelled, and the thinking tags.
_CONTROL_TOKEN = re.compile(r"<\s*\|[^<>|]{0,64}\|\s*>|<\s*/?\s*think\s*>", re.IGNORECASE)
# C0/C1 controls other than newline and tab, and the bidi overrides used to disguise text.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A leading tag: the emotion, or one of the fast model's verdicts.
_LEADING_TAG = re.compile(r"^\s*\[(?P<tag>[a-z]+)\]\s*", re.IGNORECASE)
# The fast model's verdicts, right after the emotion tag and in either order: the item needs
# the deep tier; the fan asks her to draw (the draw tier answers with a picture).
DEEP_TAG = "[think]"
DRAW_TAG = "[draw]"
_VERDICTS = {DEEP_TAG[1:-1], DRAW_TAG[1:-1]}
# A verdict tag anywhere else: never shown, and not a verdict (the format puts verdicts first,
# so one mid-answer is the fan's words echoed back, not the model's judgement).
_STRAY_VERDICT = re.compile(r"\s*\[(?:think|draw)\]", re.IGNORECASE)
MAX_TEXT_CHARS = 2000  # Reply.text's limit


def neutralise_fan_text(text: str, max_chars: int = 500) -> str:
    """Make untrusted text safe to put inside a chat template.

    Control-token look-alikes get their angle brackets swapped for full-width ones, so they
    stay readable but can never tokenize as control ids; invisible controls are removed.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    # NFKC folds full-width brackets back to ASCII, so neutralise after normalising.
    text = _CONTROL_TOKEN.sub(lambda m: m.group(0).replace("<", "\uff1c").replace(">", "\uff1e"), text)
    return text[:max_chars].strip()


@dataclass(frozen=True)
class ReadReply:
    text: str  # what the overlay shows
    cue: Cue
    used_fallback: bool  # the model gave nothing usable: `text` is a persona fallback line
    wants_deep: bool  # the model tagged the item as needing thought
    wants_draw: bool = False  # the model tagged the item as a request for her to draw


def read_reply(raw: str, persona: Persona, item_id: str, language: str | None = None) -> ReadReply:
    """The text to show, its avatar cue, and the model's verdict, from a raw model answer.

    The model is asked to open with an emotion tag, then optionally the deep tag and the draw
    tag; an unknown or missing emotion means "happy". Thinking leftovers, verdict tags and
    control-token look-alikes never reach the overlay.
    """
    text = raw
    if "</think>" in text:
        text = text.split("</think>", 1)[1]
    # U+FFFD: a reply cut inside a multi-byte character decodes to replacement marks.
    # Control tokens a server decoded as text (e.g. <|endoftext|>) are dropped, not shown.
    text = _CONTROL_TOKEN.sub("", text.replace("\ufffd", ""))
    text = neutralise_fan_text(text, max_chars=2 * MAX_TEXT_CHARS)
    emotion, verdicts, text = _leading_tags(text)
    text = " ".join(_STRAY_VERDICT.sub("", text).split())
    if len(text) > MAX_TEXT_CHARS:  # the reply contract's limit; the bubble's is checked by the tiers
        text = text[: MAX_TEXT_CHARS - 1] + "…"
    used_fallback = not text
    if used_fallback:
        text = persona.fallback_line(item_id, language)
    return ReadReply(
        text, Cue(emotion=emotion, motion=persona.motion_for(emotion)), used_fallback,
        wants_deep="think" in verdicts, wants_draw="draw" in verdicts,
    )


def _leading_tags(text: str) -> tuple[str, set[str], str]:
    """The emotion ("happy" when missing or unknown), the verdicts, and the text after the leading tags.

    One emotion-like tag is read (an unknown one is dropped, not shown); verdict tags may come
    before or after it. A second emotion-like tag is left in the text.
    """
    emotion = "happy"
    verdicts: set[str] = set()
    seen_emotion = False
    while match := _LEADING_TAG.match(text):
        tag = match.group("tag").lower()
        if tag in _VERDICTS:
            verdicts.add(tag)
        elif seen_emotion:
            break
        else:
            seen_emotion = True
            emotion = tag if tag in EMOTIONS else emotion
        text = text[match.end():]
    return emotion, verdicts, text


def fit_bubble(text: str, persona: Persona) -> str:
    """`text` cut at a word to her bubble's size, with an ellipsis (for tiers that do not check replies)."""
    if len(text) <= persona.max_reply_chars:
        return text
    cut = text[: persona.max_reply_chars].rsplit(" ", 1)[0]
    return (cut or text[: persona.max_reply_chars]) + "…"
