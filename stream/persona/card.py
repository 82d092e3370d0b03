"""The persona knowledge base: who she is, how she speaks, what she never talks about.

One versioned JSON file (``config/persona.json``; a guide for writing one is in
``config/persona-guide.md``). Loading validates it whole: every problem is reported with
the field it is in (``lines.zh.fallback: ...``), and the lines she may say without a
model (holding and fallback lines, catchphrases) must themselves pass the reply checks
every model answer goes through. Every reply records the persona's ``version``.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from stream.contracts import Emotion
from stream.errors import ConfigError

PERSONA_SCHEMA_VERSION = 2
Lang = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=400)]
Term = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]

LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German",
    "es": "Spanish", "pt": "Portuguese", "it": "Italian", "ru": "Russian", "vi": "Vietnamese", "th": "Thai",
    "id": "Indonesian",
}


class PersonaError(ConfigError):
    """A persona file that cannot be used; `problems` name each field that is wrong."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"persona {source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))
        self.source = source
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonaLines(_Strict):
    """What she says without a model, in one language."""

    holding: list[Line] = Field(min_length=1, max_length=20, description="said at once when an item goes deep")
    fallback: list[Line] = Field(min_length=1, max_length=20, description="said when no model answer can go out")
    drawing: list[Line] = Field(
        default_factory=list, max_length=20, description="said at once when she goes to draw what a fan asked for"
    )
    drawn: list[Line] = Field(default_factory=list, max_length=20, description="said with the picture she drew")
    draw_sorry: list[Line] = Field(
        default_factory=list, max_length=20, description="said when the picture she promised cannot be shown"
    )


DRAW_LINE_KINDS = ("drawing", "drawn", "draw_sorry")


class ForbiddenTopic(_Strict):
    """A topic she never talks about; a reply containing one of `terms` is not sent."""

    topic: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="a short name, e.g. politics")
    terms: list[Term] = Field(min_length=1, max_length=200, description="words that mean a reply is on it")


_MEMORY_FIELDS = {
    "first_time": {"name"},
    "regular": {"name", "earlier", "first_seen"},
    "last_sent": {"last_seen", "what", "said"},
    "last_answer": {"answer"},
}


class FanMemoryLines(_Strict):
    """How her prompt speaks of the fan: a first-timer welcomed, a regular remembered.

    Placeholders: `first_time` {name}; `regular` {name} {earlier} {first_seen};
    `last_sent` {last_seen} {what} {said}; `last_answer` {answer}. The fan's own words
    are made inert before they are put in.
    """

    first_time: Line = "This is {name}'s first time here: welcome them warmly, as a new friend."
    regular: Line = ("{name} is a regular: {earlier} earlier item(s), first seen {first_seen}. "
                     "Greet them as someone you remember.")
    last_sent: Line = "Last time ({last_seen}) they sent {what}{said}"
    last_answer: Line = "You answered: {answer}"

    @model_validator(mode="after")
    def _placeholders_known(self) -> FanMemoryLines:
        problems = []
        for field, allowed in _MEMORY_FIELDS.items():
            try:
                used = {name for _, name, _, _ in string.Formatter().parse(getattr(self, field)) if name is not None}
            except ValueError as err:
                problems.append(f"{field}: {err}")
                continue
            if used - allowed:
                problems.append(f"{field}: unknown placeholder(s) {sorted(used - allowed)}; use {sorted(allowed)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Persona(_Strict):
    schema_version: Literal[2] = Field(description="the persona file format; 2 is this one")
    version: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", description="this persona's version, recorded on every reply"
    )
    name: str = Field(min_length=1, max_length=64)
    identity: str = Field(min_length=1, max_length=600, description="who she is, in a sentence or two")
    personality: str = Field(min_length=1, max_length=600)
    speaking_style: str = Field(min_length=1, max_length=400)
    catchphrases: list[Line] = Field(min_length=1, max_length=12)
    likes: list[Line] = Field(default_factory=list, max_length=20)
    dislikes: list[Line] = Field(default_factory=list, max_length=20)
    lore: list[Line] = Field(default_factory=list, max_length=40, description="facts about her world")
    forbidden_topics: list[ForbiddenTopic] = Field(default_factory=list, max_length=30)
    languages: list[Lang] = Field(min_length=1, max_length=8, description="languages she speaks")
    default_language: Lang = Field(description="what she answers in when the fan's language is not hers")
    answer_in_fan_language: bool = Field(default=True, description="answer in the fan's language when she speaks it")
    language_register: dict[Lang, str] = Field(default_factory=dict, description="how she sounds, per language")
    min_reply_chars: int = Field(default=2, ge=1, le=200)
    max_reply_chars: int = Field(default=240, ge=20, le=2000, description="what fits her speech bubble")
    lines: dict[Lang, PersonaLines] = Field(description="holding and fallback lines, one set per language she speaks")
    fan_memory: FanMemoryLines = Field(
        default_factory=FanMemoryLines, description="how her prompt greets a first-timer and remembers a regular"
    )
    motions: dict[Emotion, str] = Field(
        default_factory=dict, description="emotion -> avatar motion name; missing ones use 'idle'"
    )

    @model_validator(mode="after")
    def _languages_agree(self) -> Persona:
        problems = []
        if len(set(self.languages)) != len(self.languages):
            problems.append("languages: each language once")
        if self.default_language not in self.languages:
            problems.append(f"default_language: {self.default_language!r} is not one of languages {self.languages}")
        missing = [lang for lang in self.languages if lang not in self.lines]
        if missing:
            problems.append(f"lines: no holding and fallback lines for {', '.join(missing)}")
        for lang in self.lines:
            if lang not in self.languages:
                problems.append(f"lines.{lang}: {lang!r} is not one of languages {self.languages}")
        for lang in self.language_register:
            if lang not in self.languages:
                problems.append(f"language_register.{lang}: {lang!r} is not one of languages {self.languages}")
        if self.min_reply_chars > self.max_reply_chars:
            problems.append(f"min_reply_chars: {self.min_reply_chars} is above max_reply_chars {self.max_reply_chars}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def load(cls, path: str | Path) -> Persona:
        """Read and validate a persona file, its own lines checked like replies (PersonaError says where)."""
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise PersonaError(str(path), ["the file does not exist"]) from exc
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: bytes, source: str = "<persona>") -> Persona:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PersonaError(source, [f"not JSON: {exc}"]) from exc
        if isinstance(data, dict) and data.get("schema_version") != PERSONA_SCHEMA_VERSION:
            raise PersonaError(source, [
                f"schema_version: {data.get('schema_version')!r}; this idolstream reads persona files of "
                f"schema_version {PERSONA_SCHEMA_VERSION} (see config/persona-guide.md)"
            ])
        try:
            persona = cls.model_validate(data)
        except ValidationError as exc:
            raise PersonaError(source, [_describe(error) for error in exc.errors()]) from exc
        from stream.persona.checks import own_line_problems  # the checks read a Persona: import when used

        problems = own_line_problems(persona)
        if problems:
            raise PersonaError(source, problems)
        return persona

    # --- what the tiers ask of her ----------------------------------------------------

    def motion_for(self, emotion: str) -> str:
        return self.motions.get(emotion, "idle")  # type: ignore[call-overload]

    def reply_language(self, fan_language: str | None) -> str | None:
        """The language she answers a fan in: theirs when she speaks it (and may), else her default.

        None when the fan's language is unknown (no text): any language she speaks will do.
        """
        if fan_language is None:
            return None
        if self.answer_in_fan_language and fan_language in self.languages:
            return fan_language
        return self.default_language

    def lines_in(self, language: str | None) -> PersonaLines:
        return self.lines.get(language or self.default_language) or self.lines[self.default_language]

    def fallback_line(self, item_id: str, language: str | None = None) -> str:
        """A stable choice per item (a retried item says the same thing), in `language` when she speaks it."""
        return _stable_choice(self.lines_in(language).fallback, item_id)

    def holding_line(self, item_id: str, language: str | None = None) -> str:
        return _stable_choice(self.lines_in(language).holding, item_id)

    def draw_line(self, kind: Literal["drawing", "drawn", "draw_sorry"], request_id: str,
                  language: str | None = None) -> str:
        """Her line about a drawing (going to draw, the picture, the apology): a stable choice per request.

        In `language` when she has drawing lines in it, else in her default language's; a persona
        with none at all says its holding line (going to draw) or its fallback line.
        """
        for lines in (self.lines_in(language), self.lines_in(None)):
            if getattr(lines, kind):
                return _stable_choice(getattr(lines, kind), request_id)
        if kind == "drawing":
            return self.holding_line(request_id, language)
        return self.fallback_line(request_id, language)

    def spoken_lines(self) -> list[str]:
        """Every line she may say without a model, in every language."""
        return [
            line for lines in self.lines.values()
            for line in (*lines.holding, *lines.fallback, *lines.drawing, *lines.drawn, *lines.draw_sorry)
        ]


def _stable_choice(lines: list[str], item_id: str) -> str:
    return lines[int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % len(lines)]


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"
