"""The word filter: every listed term, and its disguises, found in one pass.

`TextFilter` is built once from a word list (`stream/moderation/words.py`): each term is
normalised (`stream/moderation/normalise.py`) and put in one Aho-Corasick automaton
(pyahocorasick) together with, for Chinese terms, its pinyin. `check(text)` normalises
the text, runs the automaton over its text form and, when the text has Chinese
characters, over its pinyin form, and returns a `TextVerdict`: the most severe action of
the matches that count, their categories, and each match's span in the original text.

Which matches count:

- **Repeats.** Runs are collapsed, but a term's doubled letters must be there: `ass`
  matches `asssss` and `a s s`, not `as`.
- **Latin and other spaced scripts: a match starts where a word starts** (the text's
  start, after a separator, or after a Chinese or Japanese character), and may end inside
  a word, so inflected forms count (`idiot` matches "idiots"), while a term inside a word
  does not (`ass` in "class", `hell` in "shell"). Separators between the letters are
  skipped (`i.d.i.o.t`, `i d i o t`), but a match that skips a separator must end where a
  word ends: "as shole" matches `asshole`, "as soon as" does not match `ass`. Ordinary
  words that *start* with a listed term ("assist", "hello" for `hell`) go in the allow-list.
- **Chinese and Japanese: anywhere**, since words are not spaced; the allow-list keeps
  ordinary words that contain a term (`去死海` for `去死`).
- **Pinyin.** A term of two or more Chinese characters also matches its toneless pinyin
  (`笨蛋`: `bendan`); one of three or more also matches its initials (`草泥马`: `cnm`; two
  letters would match too much ordinary text). Pinyin matches follow the Latin rules,
  start and end on whole syllables of the Chinese characters they cover, and need at
  least one letter the fan typed (`草ni马`), except that a term of three or more
  characters also matches other characters read the same way (`加薇信` for `加微信`):
  for two-character terms that catches too much (`本单` reads like `笨蛋`). Initials must
  be typed, as a word of their own: three letters start too many English words ("gam"
  in "game").
- **Clauses.** No match runs across a clause break (`，。！？` and the like, line breaks).
- **Allow-list.** A match lying inside an occurrence of an allowed word does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from stream.moderation.actions import ModerationAction, most_severe
from stream.moderation.errors import WordListError
from stream.moderation.normalise import (
    FROM_HAN,
    GAP_BEFORE,
    GAP_INSIDE,
    SYLLABLE_END,
    SYLLABLE_START,
    WORD,
    NormalisedText,
    Normaliser,
    is_han,
)
from stream.moderation.words import WordList, load_word_list

STAGE = "word_filter"
PINYIN_MIN_CHARS = 2  # Chinese characters a term needs before its full pinyin is matched
INITIALS_MIN_CHARS = 3  # ... before its initials, and other characters read like it, are matched


@dataclass(frozen=True, slots=True)
class WordMatch:
    """One listed term found in a text: `span` is where, in the text as written; `text` is that part."""

    term: str
    category: str
    action: ModerationAction
    span: tuple[int, int]
    text: str
    via: str  # "text", "pinyin" or "initials": which form of the term matched

    def to_dict(self) -> dict:
        return {
            "term": self.term,
            "category": self.category,
            "action": self.action.value,
            "span": list(self.span),
            "text": self.text,
            "via": self.via,
        }


@dataclass(frozen=True, slots=True)
class TextVerdict:
    """The word filter's decision: `action` is the most severe of the matches' (`allow` with none)."""

    action: ModerationAction
    categories: tuple[str, ...]
    matches: tuple[WordMatch, ...]
    stage: str = STAGE

    def to_dict(self) -> dict:
        return {
            "action": self.action.value,
            "stage": self.stage,
            "categories": list(self.categories),
            "matches": [match.to_dict() for match in self.matches],
        }


@dataclass(frozen=True, slots=True)
class _Pattern:
    term: str
    category: str  # "" for an allowed word
    action: ModerationAction
    via: str  # "text", "pinyin", "initials"
    runs: tuple[int, ...]
    han: int  # Chinese characters in the term
    pinyin_form: bool  # matched against the pinyin form of texts, not the text form


class TextFilter:
    """A compiled word list. Build it once (it normalises every term); `check()` is pure and fast."""

    def __init__(self, words: WordList, *, source: str = "word list", normaliser: Normaliser | None = None) -> None:
        self._normaliser = normaliser or Normaliser()
        self._source = source
        patterns: dict[str, list[_Pattern]] = {}
        listed: dict[tuple[str, tuple[int, ...]], str] = {}
        for name, category in words.categories.items():
            for index, term in enumerate(category.terms):
                form = self._add(patterns, term, name, category.moderation_action, f"categories.{name}.terms[{index}]")
                listed.setdefault((form.text, form.runs), name)
        for index, word in enumerate(words.allow):
            form = self._add(patterns, word, "", ModerationAction.ALLOW, f"allow[{index}]")
            if (form.text, form.runs) in listed:
                raise WordListError(
                    f"{source}: allow[{index}]: {word!r} is also listed in {listed[form.text, form.runs]!r}; "
                    "an allowed word must contain a listed term, not be one"
                )
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        for key, entries in patterns.items():
            self._automaton.add_word(key, (len(key), tuple(entries)))
        self._automaton.make_automaton()
        self.pattern_count = len(patterns)

    @classmethod
    def from_file(cls, path: Path, normaliser: Normaliser | None = None) -> TextFilter:
        """Load, check and compile a word list file (WordListError names the file and the field)."""
        return cls(load_word_list(path), source=str(path), normaliser=normaliser)

    def check(self, text: str) -> TextVerdict:
        """Every listed term in `text`, disguised or not, and what it asks for."""
        text_form, pinyin_form = self._normaliser.forms(text)
        found: list[tuple[_Pattern, tuple[int, int]]] = []
        allowed: list[tuple[int, int]] = []
        if text_form is pinyin_form:
            self._scan(text_form, None, found, allowed)
        else:
            self._scan(text_form, False, found, allowed)
            self._scan(pinyin_form, True, found, allowed)
        matches: dict[tuple[str, str, tuple[int, int]], WordMatch] = {}
        for pattern, span in found:
            if any(start <= span[0] and span[1] <= end for start, end in allowed):
                continue
            key = (pattern.term, pattern.category, span)
            if key not in matches:
                matches[key] = WordMatch(
                    pattern.term, pattern.category, pattern.action, span, text[span[0] : span[1]], pattern.via
                )
        ordered = tuple(sorted(matches.values(), key=lambda m: (m.span, m.category, m.term)))
        return TextVerdict(
            action=most_severe([m.action for m in ordered]),
            categories=tuple(sorted({m.category for m in ordered})),
            matches=ordered,
        )

    def _scan(
        self,
        form: NormalisedText,
        pinyin: bool | None,
        found: list[tuple[_Pattern, tuple[int, int]]],
        allowed: list[tuple[int, int]],
    ) -> None:
        """Run the automaton over one form; `pinyin` picks the patterns for it (None: both, the forms are one)."""
        runs = form.runs
        for end, (length, entries) in self._automaton.iter(form.text):
            first = end - length + 1
            for pattern in entries:
                if pinyin is not None and pattern.pinyin_form is not pinyin:
                    continue
                if any(runs[first + k] < need for k, need in enumerate(pattern.runs)):
                    continue
                if pattern.action is ModerationAction.ALLOW:
                    allowed.append(form.original_span(first, end))
                elif _counts(pattern, form, first, end):
                    found.append((pattern, form.original_span(first, end)))

    def _add(
        self, patterns: dict[str, list[_Pattern]], term: str, category: str, action: ModerationAction, field: str
    ) -> NormalisedText:
        normaliser = self._normaliser
        form = normaliser.normalise(term)
        if not form.text:
            raise WordListError(f"{self._source}: {field}: {term!r} has no letters or digits once normalised")
        folded = normaliser.folded(term)
        han = sum(1 for char in folded if is_han(char))
        allow = action is ModerationAction.ALLOW

        def add(key_form: NormalisedText, via: str, pinyin_form: bool) -> None:
            entry = _Pattern(term, category, action, via, key_form.runs, han, pinyin_form)
            entries = patterns.setdefault(key_form.text, [])
            if entry not in entries:
                entries.append(entry)

        add(form, "text", False)
        if han >= PINYIN_MIN_CHARS:
            # Each character's own most common reading (what texts are read with) and the
            # phrase's reading (pypinyin picks a character's reading from its neighbours);
            # each as read from the characters (letters not collapsed) and as typed (collapsed).
            own = normaliser.readings(term)
            phrase = normaliser.readings(term, by_phrase=True)
            readings = [own] if phrase == own else [own, phrase]
            for chosen in readings:
                add(normaliser.pinyin_form(term, chosen), "pinyin", True)
                add(normaliser.normalise(_spell(folded, chosen)), "pinyin", True)
                if han >= INITIALS_MIN_CHARS and not allow:
                    add(normaliser.normalise(_spell(folded, [r[:1] for r in chosen])), "initials", True)
        return form


def _spell(folded: str, readings: list[str]) -> str:
    """`folded` with its Chinese characters replaced by `readings`, in order (unread ones kept)."""
    given = iter(readings)
    return "".join((next(given, "") or c) if is_han(c) else c for c in folded)


def _counts(pattern: _Pattern, form: NormalisedText, first: int, last: int) -> bool:
    """Whether a match of `pattern` on form[first..last] obeys the word-boundary and pinyin rules."""
    if form.segments[first] != form.segments[last]:
        return False  # across a clause break
    flags = form.flags
    if pattern.pinyin_form:
        typed = sum(1 for i in range(first, last + 1) if not flags[i] & FROM_HAN)
        if pattern.via == "initials" and (typed < last - first + 1 or not _word_ends(form, last)):
            return False  # initials are typed, as a word of their own: "cnm", not the start of "cnmlogs"
        if typed == 0 and pattern.han < INITIALS_MIN_CHARS:
            return False
    return _starts_well(form, first) and _ends_well(form, first, last)


def _starts_well(form: NormalisedText, first: int) -> bool:
    flag = form.flags[first]
    if flag & FROM_HAN:
        return bool(flag & SYLLABLE_START)
    if not flag & WORD or first == 0 or flag & GAP_BEFORE:
        return True
    return not form.flags[first - 1] & WORD


def _ends_well(form: NormalisedText, first: int, last: int) -> bool:
    flags = form.flags
    flag = flags[last]
    if flag & FROM_HAN:
        return bool(flag & SYLLABLE_END)
    if not flag & WORD:
        return True
    skipped = any(flags[i] & GAP_BEFORE for i in range(first + 1, last + 1)) or any(
        flags[i] & GAP_INSIDE for i in range(first, last + 1)
    )
    return not skipped or _word_ends(form, last)


def _word_ends(form: NormalisedText, last: int) -> bool:
    after = last + 1
    flags = form.flags
    return (
        after == len(flags)
        or bool(flags[after] & GAP_BEFORE)
        or not flags[after] & WORD
        or form.segments[after] != form.segments[last]
    )
