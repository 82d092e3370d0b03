"""Text normalisation for the word filter: one canonical form per way of writing a word.

`Normaliser.forms(text)` returns two forms of a text, each a `NormalisedText` that maps
every one of its characters back to a span of the original, so a match can say what it
matched as the fan wrote it:

- the **text form**: NFKC; format characters (zero-width spaces and joiners, soft hyphens,
  tags), variation selectors, Hangul fillers and stray combining marks removed; case
  folded; accents taken off Latin, Greek and Cyrillic letters; Cyrillic and Greek letters
  that look like Latin ones written as Latin (`аss` with a Cyrillic a is `ass`); traditional
  Chinese folded to simplified with OpenCC, character by character (a word list and the
  text then fold the same way whatever surrounds them); separators (spaces, punctuation,
  symbols, emoji, control characters) skipped; runs of one character collapsed to one,
  with the run's length kept, so `idiooot` and `i d i o t` both read `idiot` while a
  listed `ass` still needs two s's (`as` is not `ass`).
- the **pinyin form**: the text form with every Chinese character replaced by its pinyin
  (pypinyin, no tones, the character's most common reading), so `草ni马` and `caonima`
  read the same. Letters read from Chinese characters are not collapsed (each stays on
  its character); typed letters are. Built only when the text has Chinese characters;
  otherwise it is the text form itself.

Full-width clause punctuation (`，。、；：！？`) and line breaks are *breaks*: they are
skipped like other separators, but no match may run across one, so two clauses of
ordinary Chinese never join into a listed word (`回去，死活` does not contain `去死`).

Each character carries flags the matcher's word-boundary rules read (see
`stream/moderation/text_filter.py`): whether it belongs to a script written with spaces
between words (`WORD`: Latin, digits, Cyrillic, Greek, Hangul...), whether separators
were skipped before it or inside its run, and in the pinyin form whether it came from a
Chinese character and starts or ends that character's syllable.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from itertools import groupby

import opencc
from pypinyin import lazy_pinyin

# Flags of a normalised character.
WORD = 1  # a letter or digit of a script written with spaces between words
GAP_BEFORE = 2  # separators were skipped just before it (or it starts a segment)
GAP_INSIDE = 4  # its collapsed run had separators between its repeats
FROM_HAN = 8  # pinyin form: a letter of a Chinese character's reading
SYLLABLE_START = 16  # pinyin form: the first letter of a Chinese character's reading
SYLLABLE_END = 32  # pinyin form: the last letter of a Chinese character's reading
HAN = 64  # text form: a Chinese character

# Separators that end a clause: skipped, but never matched across.
HARD_BREAKS = frozenset("\n\r\u2028\u2029\u3002\uff0c\u3001\uff1b\uff1a\uff01\uff1f\uff61\uff64")

# Invisible characters that Unicode files under letters, used to pad or split words.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u17b4\u17b5")

# Lower-case Cyrillic and Greek letters that look like Latin ones (after case folding).
HOMOGLYPHS = {
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "ү": "y", "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i",
    "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ɑ": "a",
    "ɡ": "g", "ı": "i", "ȷ": "j",
}  # fmt: skip

_CACHE_LIMIT = 200_000  # folded characters and readings kept; cleared when passed


def _script_flag(char: str) -> int:
    """WORD for a letter or digit of a script written with spaces, HAN for Chinese, else 0."""
    code = ord(char)
    if (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x323AF
        or code == 0x3007
    ):
        return HAN
    if (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3005 <= code <= 0x3006
        or 0x3100 <= code <= 0x312F  # bopomofo
        or 0x31A0 <= code <= 0x31FF
        or 0x0E00 <= code <= 0x0EFF  # Thai, Lao
        or 0x1000 <= code <= 0x109F  # Myanmar
        or 0x1780 <= code <= 0x17FF  # Khmer
    ):
        return 0
    return WORD


def _letters(syllable: str, char: str) -> str:
    """A pypinyin syllable as plain letters; "" when pypinyin gave the character back (no reading)."""
    if syllable == char:
        return ""
    return "".join(c for c in unicodedata.normalize("NFD", syllable) if c.isascii() and c.isalpha())


def is_han(char: str) -> bool:
    """Whether `char` is a Chinese character (one that has a pinyin reading)."""
    return _script_flag(char) == HAN


@dataclass(frozen=True, slots=True)
class NormalisedText:
    """A normalised form of `original`: its characters, and for each one its original span.

    `runs[i]` is how many times `text[i]` was repeated before collapsing; `spans[i]` the
    (start, end) of those repeats in `original`; `flags[i]` the bits above; `segments[i]`
    the clause it is in (breaks start a new one).
    """

    original: str
    text: str
    spans: tuple[tuple[int, int], ...]
    runs: tuple[int, ...]
    flags: tuple[int, ...]
    segments: tuple[int, ...]

    def original_span(self, first: int, last: int) -> tuple[int, int]:
        """The span of `original` that normalised characters `first`..`last` (inclusive) came from."""
        return self.spans[first][0], self.spans[last][1]


# A folded token: (character, flags, original start, original end, gap before, segment).
_Token = tuple[str, int, int, int, bool, int]
# A folded cluster: None for a break, else items that are None (a separator) or (char, flags).
_Folded = tuple[tuple[str, int] | None, ...] | None


class Normaliser:
    """Folds texts into the forms the word filter matches; caches per character, so it is fast."""

    def __init__(self) -> None:
        self._t2s = opencc.OpenCC("t2s")
        self._folded: dict[str, _Folded] = {}
        self._readings: dict[str, str] = {}

    def normalise(self, text: str) -> NormalisedText:
        """The text form of `text`."""
        return _collapse(text, self._tokens(text))

    def forms(self, text: str) -> tuple[NormalisedText, NormalisedText]:
        """The text form and the pinyin form of `text` (the same object when it has no Chinese)."""
        tokens = self._tokens(text)
        text_form = _collapse(text, tokens)
        if not any(token[1] & HAN for token in tokens):
            return text_form, text_form
        return text_form, _collapse(text, self._pinyin_tokens(tokens, None))

    def pinyin_form(self, text: str, readings: list[str] | None = None) -> NormalisedText:
        """The pinyin form of `text`, its Chinese characters read as `readings` (one each, in order) if given."""
        return _collapse(text, self._pinyin_tokens(self._tokens(text), readings))

    def folded(self, text: str) -> str:
        """The folded characters of `text` in order, separators skipped, nothing collapsed."""
        return "".join(token[0] for token in self._tokens(text))

    def reading(self, char: str) -> str:
        """The toneless pinyin of one Chinese character (its most common reading), or "" if unknown."""
        reading = self._readings.get(char)
        if reading is None:
            if len(self._readings) > _CACHE_LIMIT:
                self._readings.clear()
            reading = _letters(lazy_pinyin(char)[0], char)
            self._readings[char] = reading
        return reading

    def readings(self, text: str, *, by_phrase: bool = False) -> list[str]:
        """One reading per Chinese character of `text` once folded ("" where unknown): each character's
        own most common one, or with `by_phrase` the one pypinyin picks from the characters around it."""
        folded = self.folded(text)
        if not by_phrase:
            return [self.reading(c) for c in folded if is_han(c)]
        out: list[str] = []
        for han, group in groupby(folded, key=is_han):
            if han:
                chars = list(group)
                syllables = lazy_pinyin("".join(chars))
                if len(syllables) != len(chars):
                    syllables = chars  # not one syllable per character: fall back to their own readings
                out.extend(_letters(s, c) if s != c else self.reading(c) for s, c in zip(syllables, chars))
        return out

    def _tokens(self, text: str) -> list[_Token]:
        tokens: list[_Token] = []
        gap = False
        segment = 0
        folded_cache = self._folded
        n = len(text)
        i = 0
        while i < n:
            j = i + 1
            # A cluster is a character and the combining marks after it: NFKC composes them.
            while j < n and unicodedata.category(text[j])[0] == "M":
                j += 1
            cluster = text[i:j]
            folded = folded_cache.get(cluster)
            if folded is None and cluster not in folded_cache:
                folded = self._fold_cluster(cluster)
                if j - i == 1:
                    if len(folded_cache) > _CACHE_LIMIT:
                        folded_cache.clear()
                    folded_cache[cluster] = folded
            if folded is None:
                segment += 1
                gap = True
            else:
                for item in folded:
                    if item is None:
                        gap = True
                    else:
                        tokens.append((item[0], item[1], i, j, gap, segment))
                        gap = False
            i = j
        return tokens

    def _fold_cluster(self, cluster: str) -> _Folded:
        if cluster[0] in HARD_BREAKS:
            return None
        items: list[tuple[str, int] | None] = []
        for char in unicodedata.normalize("NFKC", cluster).casefold():
            category = unicodedata.category(char)
            if category == "Cf" or category[0] == "M" or char in _INVISIBLE_LETTERS:
                continue  # invisible: neither a character nor a gap
            if category[0] not in "LN":
                items.append(None)  # a separator: spaces, punctuation, symbols, emoji, controls
                continue
            for out in self._fold_letter(char):
                items.append((out, _script_flag(out)))
        return tuple(items)

    def _fold_letter(self, char: str) -> str:
        if 0x80 <= ord(char) < 0x530:  # Latin, IPA, Greek, Cyrillic: drop accents
            char = "".join(c for c in unicodedata.normalize("NFD", char) if unicodedata.category(c)[0] != "M")
            char = "".join(HOMOGLYPHS.get(c, c) for c in char)
        elif _script_flag(char) == HAN:
            char = self._t2s.convert(char)
        return char

    def _pinyin_tokens(self, tokens: list[_Token], readings: list[str] | None) -> list[_Token]:
        """Tokens with each Chinese character replaced by the letters of its reading."""
        given = iter(readings) if readings is not None else None
        out: list[_Token] = []
        for token in tokens:
            char, flags, start, end, gap, segment = token
            if not flags & HAN:
                out.append(token)
                continue
            reading = next(given, "") if given is not None else self.reading(char)
            if not reading:
                out.append(token)
                continue
            last = len(reading) - 1
            for k, letter in enumerate(reading):
                syllable = (SYLLABLE_START if k == 0 else 0) | (SYLLABLE_END if k == last else 0)
                out.append((letter, FROM_HAN | syllable, start, end, gap and k == 0, segment))
        return out


def _collapse(original: str, tokens: list[_Token]) -> NormalisedText:
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    runs: list[int] = []
    flags: list[int] = []
    segments: list[int] = []
    last_segment = -1
    for char, flag, start, end, gap, segment in tokens:
        # Letters read from Chinese characters are never merged: each stays on its own character.
        if chars and chars[-1] == char and segment == last_segment and not (flag | flags[-1]) & FROM_HAN:
            runs[-1] += 1
            spans[-1] = (spans[-1][0], end)
            if gap:
                flags[-1] |= GAP_INSIDE
            continue
        if gap or segment != last_segment:
            flag |= GAP_BEFORE
        chars.append(char)
        spans.append((start, end))
        runs.append(1)
        flags.append(flag)
        segments.append(segment)
        last_segment = segment
    return NormalisedText(original, "".join(chars), tuple(spans), tuple(runs), tuple(flags), tuple(segments))
