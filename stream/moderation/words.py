"""Word lists for the word filter: the file format, read and checked in one place.

A word list is one JSON object::

    {
      "categories": {
        "insult":    {"action": "block",  "terms": ["笨蛋", "idiot"]},
        "self_harm": {"action": "review", "terms": ["不想活了"]}
      },
      "allow": ["去死海", "assist"]
    }

- `categories`: at least one; a name is lower-case letters, digits and `_`. `action` is
  what a match of one of its terms asks for: `block` (never shown) or `review` (held for
  an operator). A term may be a word or a phrase, in any script; a term in two categories
  counts for both.
- `allow`: ordinary words and phrases that contain a listed term. A match that lies
  inside an occurrence of one of them does not count (`assist` keeps `ass` from matching
  in "assistant"; `去死海` keeps `去死` from matching in "我想去死海玩").

Terms and allowed words are normalised the way texts are (`stream/moderation/normalise.py`),
so one entry covers its full-width, traditional, spaced-out and repeated-letter forms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from stream.moderation.actions import ModerationAction
from stream.moderation.errors import WordListError

Term = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
CategoryName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class WordCategory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["block", "review"]
    terms: list[Term] = Field(min_length=1)

    @property
    def moderation_action(self) -> ModerationAction:
        return ModerationAction(self.action)


class WordList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: dict[CategoryName, WordCategory] = Field(min_length=1)
    allow: list[Term] = Field(default_factory=list)


def load_word_list(path: Path) -> WordList:
    """Read and check a word list file; any problem is a WordListError naming the file and the field."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WordListError(f"{path}: cannot read the word list: {exc.strerror or exc}") from exc
    return parse_word_list(data, str(path))


def parse_word_list(data: bytes | str, source: str) -> WordList:
    """Check a word list's JSON text; `source` names it in errors."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WordListError(f"{source}: line {exc.lineno}, column {exc.colno}: not JSON: {exc.msg}") from exc
    try:
        return WordList.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise WordListError(f"{source}: {field_name(first['loc'])}: {first['msg']}{more}") from exc


def field_name(loc: tuple[str | int, ...]) -> str:
    """('categories', 'insult', 'terms', 2) -> 'categories.insult.terms[2]'."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part == "[key]":
            name += " (the name)"
        else:
            name += f".{part}" if name else str(part)
    return name or "(the whole file)"
