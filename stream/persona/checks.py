"""A reply checked against the persona before it leaves: pure, one function per question.

`check_reply` answers, for the text the overlay would show: does it fit her bubble, is it
in a language she speaks (and in the fan's, where she answers fans in theirs), does it
stay off her forbidden topics, and is it free of control tokens, markup and reasoning?
Each miss has a reason code (`ReplyMiss`); the tiers regenerate once, then say the
persona's fallback line, and count misses by reason.

`own_line_problems` puts the persona's own lines (holding, fallback, catchphrases) through
the same checks when the persona is loaded, so a line she says without a model can never
be one a model answer would be stopped for.
"""

from __future__ import annotations

import re
import unicodedata

from stream.persona.card import LANGUAGE_NAMES, Persona
from stream.persona.language import detect_language
from stream.reasons import ReplyMiss


# Qwen's special tokens and the thinking tags, ASCII or full-width (as `neutralise_fan_text` leaves them).
_CONTROL = re.compile(r"[<＜]\s*\|[^<>＜＞|]{0,64}\|\s*[>＞]|[<＜]\s*/?\s*think\s*[>＞]|<\|", re.IGNORECASE)
_MARKUP = re.compile(
    r"</?[a-z][a-z0-9]*(\s[^<>]*)?/?>"  # HTML tags
    r"|```|`[^`\n]+`"  # code
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__"  # bold
    r"|^\s{0,3}#{1,6}\s|^\s*[-*+]\s|^\s*\d+[.)]\s"  # headings, list items
    r"|\[[^\]\n]+\]\([^)\n]+\)"  # links
    r"|https?://|www\.",
    re.IGNORECASE | re.MULTILINE,
)
_REASONING = re.compile(
    r"\bthe user\b|\bas an ai\b|\blanguage model\b|\bthinking process\b|\bstep by step\b"
    r"|用户|用戶|思考过程|作为(一个)?(AI|人工智能)|ユーザー|思考プロセス",
    re.IGNORECASE,
)


def fold(text: str) -> str:
    """For matching topic terms: NFKC and case folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def forbidden_topics_in(text: str, persona: Persona) -> list[str]:
    """The forbidden topics whose terms appear in `text` (Latin terms as whole words)."""
    folded = fold(text)
    found = []
    for topic in persona.forbidden_topics:
        for term in topic.terms:
            term = fold(term)
            if (re.search(rf"(?<!\w){re.escape(term)}(?!\w)", folded) if term.isascii() else term in folded):
                found.append(topic.topic)
                break
    return found


def check_reply(text: str, persona: Persona, fan_language: str | None = None) -> list[ReplyMiss]:
    """Every reason `text` may not go out as her reply to a fan writing in `fan_language`; [] when it may."""
    misses: list[ReplyMiss] = []
    length = len(text.strip())
    if length > persona.max_reply_chars:
        misses.append(ReplyMiss.TOO_LONG)
    elif length < persona.min_reply_chars:
        misses.append(ReplyMiss.TOO_SHORT)
    language = detect_language(text, prefer=persona.languages)
    if language is not None:
        if language not in persona.languages:
            misses.append(ReplyMiss.LANGUAGE_NOT_SPOKEN)
        else:
            wanted = persona.reply_language(fan_language)
            if wanted is not None and language != wanted:
                misses.append(ReplyMiss.NOT_FAN_LANGUAGE)
    if forbidden_topics_in(text, persona):
        misses.append(ReplyMiss.FORBIDDEN_TOPIC)
    if _CONTROL.search(text):
        misses.append(ReplyMiss.CONTROL_TOKENS)
    if _MARKUP.search(text):
        misses.append(ReplyMiss.MARKUP)
    if _REASONING.search(text):
        misses.append(ReplyMiss.REASONING)
    return misses


def retry_hint(misses: list[ReplyMiss], persona: Persona, fan_language: str | None) -> str:
    """One line added to the fan's turn when a reply is regenerated: what to do differently."""
    asks = []
    language = persona.reply_language(fan_language) or persona.default_language
    if ReplyMiss.LANGUAGE_NOT_SPOKEN in misses or ReplyMiss.NOT_FAN_LANGUAGE in misses:
        asks.append(f"answer in {LANGUAGE_NAMES.get(language, language)}")
    if ReplyMiss.TOO_LONG in misses:
        asks.append(f"keep it under {persona.max_reply_chars} characters")
    if ReplyMiss.TOO_SHORT in misses:
        asks.append("say a full sentence")
    if {ReplyMiss.FORBIDDEN_TOPIC, ReplyMiss.REASONING} & set(misses):
        asks.append("talk only about what they sent, in character")
    if {ReplyMiss.CONTROL_TOKENS, ReplyMiss.MARKUP} & set(misses):
        asks.append("plain spoken words only")
    return "(Answer again: " + "; ".join(asks) + ".)"


def own_line_problems(persona: Persona) -> list[str]:
    """Each of the persona's own lines that a reply check would stop, naming its field."""
    problems = []
    for lang, lines in persona.lines.items():
        for kind in ("holding", "fallback", "drawing", "drawn", "draw_sorry"):
            for index, line in enumerate(getattr(lines, kind)):
                misses = check_reply(line, persona, lang)
                if misses:
                    problems.append(f"lines.{lang}.{kind}.{index}: {line!r} fails the reply checks: "
                                    + ", ".join(misses))
    for index, line in enumerate(persona.catchphrases):
        misses = [m for m in check_reply(line, persona) if m is not ReplyMiss.TOO_SHORT]
        if misses:
            problems.append(f"catchphrases.{index}: {line!r} fails the reply checks: " + ", ".join(misses))
    return problems
