"""Which language a short text is in: by script first, then by a classifier for Latin text.

Scripts decide most of what a stream sees: kana means Japanese (even with kanji), Han
without kana Chinese, Hangul Korean. A name or a catchphrase in Latin letters inside a
Chinese or Japanese sentence does not change its language. Text in Latin letters only is
handed to py3langid (a small bundled model, nothing downloaded), restricted to common
Latin-script languages; a short, ambiguous line is taken to be in `prefer`'s Latin
language when the classifier is not sure, so "Kiraboshi!" is not called Finnish.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from functools import lru_cache

# Latin-script languages the classifier chooses among.
LATIN_LANGUAGES = ("en", "fr", "de", "es", "pt", "it", "nl", "id", "vi", "pl", "tr", "sv")
# Below this probability a Latin line is taken to be in the preferred Latin language.
SURE = 0.9
_SCRIPT_LANGUAGE = {"HANGUL": "ko", "CYRILLIC": "ru", "THAI": "th", "ARABIC": "ar", "HEBREW": "he", "GREEK": "el"}


def _script(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if name.startswith(("HIRAGANA", "KATAKANA")) or "\u30fc" == char:
        return "KANA"
    if name.startswith("CJK") or "\u3400" <= char <= "\u9fff":
        return "HAN"
    first = name.split(" ", 1)[0]
    if first in _SCRIPT_LANGUAGE:
        return first
    if first == "LATIN" or "FULLWIDTH LATIN" in name:
        return "LATIN"
    return "OTHER"


def detect_language(text: str, prefer: Collection[str] = ("en",)) -> str | None:
    """A two-letter code, or None for text without letters (emoji, numbers, punctuation)."""
    counts: dict[str, int] = {}
    for char in text:
        script = _script(char)
        if script:
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return None
    if counts.get("KANA"):
        return "ja"
    if counts.get("HAN"):
        return "zh"
    script = max(counts, key=counts.__getitem__)
    if script in _SCRIPT_LANGUAGE:
        return _SCRIPT_LANGUAGE[script]
    if script != "LATIN":
        return "und"
    return _latin_language(text, tuple(lang for lang in prefer if lang in LATIN_LANGUAGES))


def _latin_language(text: str, prefer: tuple[str, ...]) -> str:
    language, probability = _identifier().classify(text)
    if language in prefer or probability >= SURE or not prefer:
        return language
    return prefer[0]


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LATIN_LANGUAGES))
    return identifier


def fan_language(text: str | None, declared: str | None, prefer: Collection[str] = ("en",)) -> str | None:
    """The language a fan wrote in: what their bot declared (``zh-CN`` -> zh), else detected; None without text."""
    if declared:
        return declared.split("-", 1)[0].lower()
    return detect_language(text, prefer) if text else None
