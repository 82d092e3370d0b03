"""Message contracts on the topics: Submission, Reply, Escalation, ShedItem, Reasoning, DeadLetter (v1).

Typed, strict (no coercion, no unknown fields) and encoded with orjson. The JSON Schema
of each is exported to ``stream/schemas/`` (see `export_schemas`) for bot authors who
produce from other languages; a test keeps the files in sync with these models.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from stream.errors import InvalidEnvelope, ReasonCode
from stream.routing import DegradeReason, RouteReason, ShedReason

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"

# Ids travel as Kafka keys and in URLs: keep them plain.
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]
ItemKind = Literal["fan_image", "danmaku_screenshot"]
Tier = Literal["fast", "deep", "fallback"]
# An answer is the item's one reply; a holding line ("let me think…") may come before it.
ReplyRole = Literal["answer", "holding"]
Emotion = Literal["happy", "excited", "shy", "surprised", "thinking", "sad", "neutral"]
ImageMime = Literal["image/png", "image/jpeg", "image/webp", "image/gif"]

MAX_THUMBNAIL_CHARS = 24_000  # a data URL of a thumbnail; replies stay small

# The base64 text of the largest image a submission may carry (4 MiB of image bytes).
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_IMAGE_BASE64_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4
# Room for the envelope around the largest image; topics' max.message.bytes match it.
MAX_MESSAGE_BYTES = MAX_IMAGE_BASE64_CHARS + 64 * 1024


class _Contract(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


_C = TypeVar("_C", bound=_Contract)


class UserRef(_Contract):
    id: Identifier
    display_name: str = Field(min_length=1, max_length=64)


class ImagePayload(_Contract):
    mime: ImageMime
    data: str = Field(
        min_length=4,
        max_length=MAX_IMAGE_BASE64_CHARS,
        description="standard base64 of the image file's bytes",
    )

    def raw_bytes(self) -> bytes:
        return base64.b64decode(self.data, validate=True)


class Submission(_Contract):
    """A fan's item, as chat bots and the uploader produce it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    item_id: Identifier = Field(description="the producer's idempotency key")
    kind: ItemKind
    room: Identifier
    user: UserRef
    text: str | None = Field(default=None, max_length=500)
    image: ImagePayload
    created_at: AwareDatetime
    lang: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


class Cue(_Contract):
    """What the avatar does while the bubble is shown."""

    emotion: Emotion
    motion: str = Field(min_length=1, max_length=32)


class Timings(_Contract):
    """Milliseconds spent per stage; `item_created_at` anchors end-to-end latency."""

    item_created_at: AwareDatetime
    queue_ms: float = Field(ge=0)
    admission_ms: float = Field(ge=0)
    preprocess_ms: float = Field(default=0.0, ge=0)  # chat template, tokenizer, image processor
    inference_ms: float = Field(ge=0)  # the model's own time, preprocessing excluded
    replied_at: AwareDatetime


class Source(_Contract):
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key: str | None = None


class Reply(_Contract):
    """A line in the idol's voice, for the overlay of `room`.

    `tier` says who wrote the text (`fallback`: a persona line, no model); `route_reason`
    why the item took its route; `degraded` why it did not get the answer its route asked
    for (deep tier late or unavailable, model error or switching), when it did not.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    reply_id: Identifier
    item_id: Identifier
    room: Identifier
    role: ReplyRole = "answer"
    tier: Tier
    route_reason: RouteReason
    degraded: DegradeReason | None = None
    model_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=2000)
    cue: Cue
    timings: Timings
    in_reply_to: UserRef
    thumbnail: str | None = Field(
        default=None, max_length=MAX_THUMBNAIL_CHARS, pattern=r"^data:image/jpeg;base64,[A-Za-z0-9+/]+=*$",
        description="a small JPEG of what the fan sent, as a data URL, for the overlay bubble",
    )


class Draft(_Contract):
    """The fast model's answer to an escalated item: what goes out if the deep tier cannot answer."""

    text: str = Field(min_length=1, max_length=2000)
    cue: Cue
    tier: Tier
    model_id: str = Field(min_length=1, max_length=200)
    thumbnail: str | None = Field(
        default=None, max_length=MAX_THUMBNAIL_CHARS, pattern=r"^data:image/jpeg;base64,[A-Za-z0-9+/]+=*$",
        description="a small JPEG of what the fan sent, as a data URL, for the overlay bubble",
    )


class Escalation(_Contract):
    """An item the fast tier hands to the deep tier on `items.deep`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    escalation_id: Identifier
    item: Submission
    draft: Draft
    reason: RouteReason
    escalated_at: AwareDatetime
    deadline_at: AwareDatetime = Field(description="past this, the draft goes out instead of a deep answer")
    holding_sent: bool
    fast_timings: Timings
    source: Source


class ShedItem(_Contract):
    """An item deliberately not answered (stale, rate-limited, paced, duplicate), kept for a later thank-you."""

    schema_version: Literal[1] = SCHEMA_VERSION
    shed_id: Identifier
    reason: ShedReason
    item_id: Identifier
    room: Identifier
    kind: ItemKind
    user: UserRef
    age_ms: float = Field(ge=0)
    source: Source
    at: AwareDatetime


class Reasoning(_Contract):
    """A deep answer's thought, for operators only; it never reaches the overlay."""

    schema_version: Literal[1] = SCHEMA_VERSION
    item_id: Identifier
    reply_id: Identifier
    room: Identifier
    model_id: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=100_000)
    thought_tokens: int = Field(ge=0)
    closed_by_model: bool = Field(description="false when the thinking budget closed the thought")
    at: AwareDatetime


class DeadLetter(_Contract):
    """An item that could not be answered, with why and where it came from."""

    schema_version: Literal[1] = SCHEMA_VERSION
    dead_letter_id: Identifier
    reason: ReasonCode
    detail: str = Field(max_length=1000)
    source: Source
    last_offset: int | None = Field(
        default=None, ge=0,
        description="undecodable_batch only: the last offset skipped; source.offset is the first",
    )
    item_id: str | None = None
    room: str | None = None
    original_base64: str | None = Field(default=None, description="the original bytes when they fit")
    original_sha256: str
    original_size: int = Field(ge=0)
    at: AwareDatetime


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def _decode(raw: bytes, contract: type[_C], what: str) -> _C:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEnvelope(ReasonCode.INVALID_JSON, f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidEnvelope(ReasonCode.SCHEMA_VIOLATION, f"{what} must be a JSON object")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidEnvelope(
            ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})",
        )
    try:
        return contract.model_validate_json(raw)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InvalidEnvelope(ReasonCode.SCHEMA_VIOLATION, fields) from exc


def decode_submission(raw: bytes) -> Submission:
    """Parse a record value into a Submission, or raise InvalidEnvelope with its reason."""
    return _decode(raw, Submission, "a submission")


def decode_escalation(raw: bytes) -> Escalation:
    """Parse a record of `items.deep`, or raise InvalidEnvelope with its reason."""
    return _decode(raw, Escalation, "an escalation")


def dead_letter_for(
    raw: bytes,
    reason: ReasonCode,
    detail: str,
    source: Source,
    *,
    max_original_bytes: int,
    item_id: str | None = None,
    room: str | None = None,
) -> DeadLetter:
    """Keep the original bytes when they fit the DLQ's budget, else only their digest."""
    keep = len(raw) <= max_original_bytes
    return DeadLetter(
        dead_letter_id=new_id(),
        reason=reason,
        detail=detail[:1000],
        source=source,
        item_id=item_id,
        room=room,
        original_base64=base64.b64encode(raw).decode("ascii") if keep else None,
        original_sha256=hashlib.sha256(raw).hexdigest(),
        original_size=len(raw),
        at=utcnow(),
    )


CONTRACTS: dict[str, type[_Contract]] = {
    "submission.v1": Submission,
    "reply.v1": Reply,
    "escalation.v1": Escalation,
    "shed_item.v1": ShedItem,
    "reasoning.v1": Reasoning,
    "dead_letter.v1": DeadLetter,
}


def json_schemas() -> dict[str, bytes]:
    """The JSON Schema text of each contract, keyed by its file name."""
    return {
        f"{name}.schema.json": orjson.dumps(model.model_json_schema(mode="validation"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        + b"\n"
        for name, model in CONTRACTS.items()
    }


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in json_schemas().items():
        path = directory / name
        path.write_bytes(text)
        written.append(path)
    return written
