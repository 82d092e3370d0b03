"""Message contracts on the topics: Submission, Reply, Escalation, ShedItem, Reasoning, DeadLetter,
ModerationRecord, HeldReply, ReviewDecision, Feedback, Retraction, ForgetRequest, DrawRequest (v1).

Typed, strict (no coercion, no unknown fields) and encoded with orjson. The JSON Schema
of each is exported to ``stream/schemas/`` (see `export_schemas`) for bot authors who
produce from other languages; a test keeps the files in sync with these models.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream.errors import InvalidEnvelope, ReasonCode
from stream.reasons import DegradeReason, ModerationAction, ModerationSide, ModerationStage, RouteReason, ShedReason

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"

# Ids travel as Kafka keys and in URLs: keep them plain.
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]
ItemKind = Literal["fan_image", "danmaku_screenshot"]
Tier = Literal["fast", "deep", "draw", "fallback"]
# How the draw tier draws: from words alone, in the pose or outline of the fan's picture
# (ControlNet), from the fan's picture (img2img), or into the fan's picture (outpainting).
DrawMode = Literal["text_to_image", "pose", "img2img", "outpaint"]
# An answer is the item's one reply; a holding line ("let me think…") may come before it. A
# digest thanks the fans of a room whose items were shed ("Thank you A, B and C!"); its
# item_id names the room and window, not a fan's item.
ReplyRole = Literal["answer", "holding", "digest"]
Emotion = Literal["happy", "excited", "shy", "surprised", "thinking", "sad", "neutral"]
ImageMime = Literal["image/png", "image/jpeg", "image/webp", "image/gif"]

IMAGE_MIMES: tuple[str, ...] = get_args(ImageMime)

MAX_THUMBNAIL_CHARS = 24_000  # a data URL of a thumbnail; replies stay small
MAX_PICTURE_CHARS = 400_000  # a data URL of a picture she drew: inline on `replies`, under its 1 MiB records
PICTURE_PATTERN = r"^data:image/(?:webp|png|jpeg);base64,[A-Za-z0-9+/]+=*$"

# image.data comes in the forms encoders and browsers write: standard base64, bare or wrapped
# in lines (`base64` and MIME write 76 columns, PEM 64; \n or \r\n), optionally behind the
# data-URI prefix of its own mime (a browser's readAsDataURL). Wrapping is bounded (one line
# break per 64 characters at most) so that a message's size in bytes stays bounded too.
MIN_WRAP_COLUMNS = 64
_BASE64_CHAR = "[A-Za-z0-9+/]"
IMAGE_DATA_PATTERN = (
    rf"^(?:data:image/(?:{'|'.join(m.removeprefix('image/') for m in IMAGE_MIMES)});base64,)?"
    rf"(?:{_BASE64_CHAR}{{{MIN_WRAP_COLUMNS},}}\r?\n)*{_BASE64_CHAR}*={{0,2}}(?:\r?\n)?$"
)


def _most_line_break_chars(chars: int) -> int:
    """The most \r and \n characters image.data of `chars` characters can hold (\r\n after every line)."""
    return 2 * (chars // MIN_WRAP_COLUMNS + 1)


# The largest image a submission may carry (4 MiB of image bytes), as bare base64 ...
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_IMAGE_BASE64_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4
# ... and in its longest accepted form: data-URI prefix and \r\n wrapping at 64 columns.
MAX_IMAGE_DATA_CHARS = (
    max(len(f"data:{mime};base64,") for mime in IMAGE_MIMES)
    + MAX_IMAGE_BASE64_CHARS
    + _most_line_break_chars(MAX_IMAGE_BASE64_CHARS)
)
# JSON writes each \r and \n as two bytes; every other character of image.data is one.
MAX_IMAGE_DATA_JSON_BYTES = MAX_IMAGE_DATA_CHARS + _most_line_break_chars(MAX_IMAGE_DATA_CHARS)
# Room for the envelope around the largest image (an escalation's draft and thumbnail
# included); topics' max.message.bytes match it.
MAX_MESSAGE_BYTES = MAX_IMAGE_DATA_JSON_BYTES + 64 * 1024

# How far a submission's created_at may be ahead of the clock of the service that reads it.
# Closer, its age counts as 0 until the clock catches up (so a backlog can keep it up to
# this long beyond max_age_s); further, the producer's clock is wrong and the item is refused.
MAX_CLOCK_SKEW_S = 60.0


def bare_base64(data: str) -> str:
    """The standard base64 inside an accepted form of image.data: no data-URI prefix, no line breaks."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    return data.replace("\r", "").replace("\n", "")


class _Contract(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


_C = TypeVar("_C", bound=_Contract)


class UserRef(_Contract):
    id: Identifier
    display_name: str = Field(min_length=1, max_length=64)


def _data_uri_matches_mime() -> dict[str, Any]:
    """JSON Schema for what `ImagePayload` checks across its fields: a data URI names `mime`."""
    return {
        "allOf": [
            {
                "if": {"properties": {"mime": {"const": mime}}, "required": ["mime"]},
                "then": {"properties": {"data": {"pattern": f"^(?:data:{re.escape(mime)};base64,)?[^:]*$"}}},
            }
            for mime in IMAGE_MIMES
        ]
    }


class ImagePayload(_Contract):
    model_config = ConfigDict(json_schema_extra=_data_uri_matches_mime())

    mime: ImageMime
    data: str = Field(
        min_length=4,
        max_length=MAX_IMAGE_DATA_CHARS,
        pattern=IMAGE_DATA_PATTERN,
        description=(
            "standard base64 (A-Z a-z 0-9 + /, = padding) of the image file's bytes, at most "
            f"{MAX_IMAGE_BYTES // (1024 * 1024)} MiB of image; may be wrapped in lines of "
            f"{MIN_WRAP_COLUMNS} or more characters ending in \\n or \\r\\n (as `base64` and MIME "
            "encoders write), and may start with the data-URI prefix data:<mime>;base64, of this "
            "payload's own mime (as a browser's readAsDataURL gives); no other whitespace or prefix"
        ),
    )

    @model_validator(mode="after")
    def _data_uri_names_this_mime(self) -> ImagePayload:
        if self.data.startswith("data:"):
            named = self.data[len("data:") : self.data.index(";")]
            if named != self.mime:
                raise ValueError(
                    f"image.data is a data URI of {named} but image.mime is {self.mime}: "
                    f"set mime to {named}, or send the base64 without its data: prefix"
                )
        return self

    def raw_bytes(self) -> bytes:
        return base64.b64decode(bare_base64(self.data), validate=True)


def _schema_version_required(schema: dict[str, Any]) -> None:
    """The decoder refuses a submission without it, so the schema requires it (the model has a default)."""
    schema["required"] = ["schema_version", *(f for f in schema.get("required", []) if f != "schema_version")]


class Submission(_Contract):
    """A fan's item, as chat bots and the uploader produce it.

    Produce it to fan.images (kind fan_image) or danmaku.screens (kind danmaku_screenshot),
    keyed by `room`, so that a room stays on one partition, in order. Kafka's Java client and
    aiokafka place a key with murmur2; librdkafka clients (confluent-kafka, kcat, rdkafka, and
    most Go, .NET and Node clients) must set partitioner=murmur2_random to agree, or one room's
    items land on several partitions and can be answered out of order. Any compression codec
    (none, gzip, snappy, lz4, zstd) is read.
    """

    model_config = ConfigDict(json_schema_extra=_schema_version_required)

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="the integer 1 (a number, not a string)")
    item_id: Identifier = Field(description="the producer's idempotency key")
    kind: ItemKind
    room: Identifier
    user: UserRef
    text: str | None = Field(default=None, max_length=500)
    image: ImagePayload
    created_at: AwareDatetime = Field(
        description=(
            "when the fan sent the item, with its UTC offset; at most IDOLSTREAM_MAX_CLOCK_SKEW_S "
            f"(default {MAX_CLOCK_SKEW_S:g} s) ahead of the fast tier's clock, else refused as schema_violation"
        )
    )
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
    persona_version: str | None = Field(
        default=None, max_length=64, description="the persona's version the reply was written and checked under"
    )
    picture: str | None = Field(
        default=None, max_length=MAX_PICTURE_CHARS, pattern=PICTURE_PATTERN,
        description="a picture she drew for the fan (draw tier), as a data URL, shown in the bubble",
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
    persona_version: str | None = Field(default=None, max_length=64)


class ModerationRecord(_Contract):
    """A moderation verdict that stopped or held something (or an operator's decision), on `moderation`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    record_id: Identifier
    item_id: Identifier
    room: Identifier
    user: UserRef
    side: ModerationSide
    stage: ModerationStage
    action: ModerationAction
    categories: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(default_factory=list, max_length=20)
    detail: str = Field(default="", max_length=1000, description="what matched, or the guard's words")
    reply_id: Identifier | None = Field(default=None, description="the reply judged, on the reply side")
    at: AwareDatetime


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
    held_by: list[ModerationRecord] = Field(
        default_factory=list, max_length=10,
        description="verdicts that hold what the fan sent for review: the answer waits for an operator too",
    )


class DrawRequest(_Contract):
    """A fan's drawing request the fast tier hands to the draw tier on `items.draw` (keyed by room)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: Identifier
    item: Submission
    prompt: str = Field(
        min_length=1, max_length=1000,
        description="the image prompt, in her style, written by the fast model from the fan's words and picture",
    )
    mode: DrawMode
    reason: RouteReason
    language: str | None = Field(default=None, max_length=8, description="the fan's language: her words about it")
    requested_at: AwareDatetime
    deadline_at: AwareDatetime = Field(description="past this, the fan gets her apology instead of a picture")
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
    original_sha256: str | None = Field(description="SHA-256 of the original bytes; null when they could not be read")
    original_size: int | None = Field(ge=0, description="length of the original bytes; null when they could not be read")
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
    if _check_schema_version(obj):
        raw = orjson.dumps({**obj, "schema_version": SCHEMA_VERSION})
    try:
        return contract.model_validate_json(raw)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {_explain(contract, err)}" for err in exc.errors()[:5]
        )
        raise InvalidEnvelope(ReasonCode.SCHEMA_VIOLATION, fields) from exc


def _check_schema_version(obj: dict[str, Any]) -> bool:
    """Refuse a version this service does not read (`unsupported_schema_version`) or one of the
    wrong JSON type, such as the string "1" (`schema_violation`: the producer speaks this version
    but encodes it wrongly, and the exported schema refuses it too). True when the version is
    written 1.0, which JSON Schema counts as the integer 1: the caller rewrites it as 1.
    """
    if "schema_version" not in obj:
        raise InvalidEnvelope(
            ReasonCode.UNSUPPORTED_SCHEMA_VERSION, f"schema_version is missing (send the integer {SCHEMA_VERSION})"
        )
    version = obj["schema_version"]
    written_as_float = type(version) is float and version.is_integer()
    if type(version) is not int and not written_as_float:  # bool is an int to Python, not to JSON
        kind = {str: "the string ", float: "the number "}.get(type(version), "")
        raise InvalidEnvelope(
            ReasonCode.SCHEMA_VIOLATION,
            f"schema_version must be the integer {SCHEMA_VERSION}, not {kind}{orjson.dumps(version).decode()[:40]}",
        )
    if version != SCHEMA_VERSION:
        raise InvalidEnvelope(
            ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {orjson.dumps(version).decode()} is not supported (this service reads {SCHEMA_VERSION})",
        )
    return written_as_float


def _explain(contract: type[BaseModel], err: Any) -> str:
    """Pydantic's message, except where the contract can say better what to send."""
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    if err["type"] == "string_pattern_mismatch":
        description = _field_description(contract, err["loc"])
        if description:
            return f"not in an accepted form; expected {description}"
    return err["msg"]


def _field_description(model: Any, loc: tuple[int | str, ...]) -> str | None:
    field = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        model = field.annotation
    return field.description if field else None


def decode_submission(
    raw: bytes, *, now: datetime | None = None, max_clock_skew_s: float = MAX_CLOCK_SKEW_S
) -> Submission:
    """Parse a record value into a Submission, or raise InvalidEnvelope with its reason.

    A `created_at` more than `max_clock_skew_s` ahead of `now` is a `schema_violation`: such
    an item would never become stale. Closer, `item_age_s` counts its age as 0.
    """
    submission = _decode(raw, Submission, "a submission")
    ahead_s = (submission.created_at - (now or utcnow())).total_seconds()
    if ahead_s > max_clock_skew_s:
        raise InvalidEnvelope(
            ReasonCode.SCHEMA_VIOLATION,
            f"created_at {submission.created_at.isoformat()} of item {submission.item_id} is {ahead_s:.0f} s "
            f"ahead of this service's clock, more than the {max_clock_skew_s:g} s of clock skew accepted: "
            "send the time the fan sent the item, from a clock kept right (NTP), with its UTC offset",
        )
    return submission


def decode_feedback(raw: bytes) -> Feedback:
    """Parse a record of `feedback`, or raise InvalidEnvelope with its reason."""
    return _decode(raw, Feedback, "a feedback record")


def decode_retraction(raw: bytes) -> Retraction:
    """Parse a record of `replies.retracted`, or raise InvalidEnvelope with its reason."""
    return _decode(raw, Retraction, "a retraction")


def decode_forget_request(raw: bytes) -> ForgetRequest:
    """Parse a record of `fans.forget`, or raise InvalidEnvelope with its reason."""
    return _decode(raw, ForgetRequest, "a forget request")


def decode_draw_request(raw: bytes) -> DrawRequest:
    """Parse a record of `items.draw`, or raise InvalidEnvelope with its reason."""
    return _decode(raw, DrawRequest, "a drawing request")


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


def undecodable_dead_letter(source: Source, last_offset: int, detail: str) -> DeadLetter:
    """Offsets `source.offset`..`last_offset` whose record batch the consumer could not decode."""
    return DeadLetter(
        dead_letter_id=new_id(),
        reason=ReasonCode.UNDECODABLE_BATCH,
        detail=detail[:1000],
        source=source,
        last_offset=last_offset,
        original_sha256=None,
        original_size=None,
        at=utcnow(),
    )


class HeldReply(_Contract):
    """A reply held for an operator's review on `replies.held`; the overlay never reads that topic."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reply: Reply
    why: list[ModerationRecord] = Field(min_length=1, max_length=10)
    fan_text: str | None = Field(default=None, max_length=2000, description="what the fan wrote, for the reviewer")
    picture: str | None = Field(
        default=None, max_length=MAX_THUMBNAIL_CHARS, pattern=r"^data:image/jpeg;base64,[A-Za-z0-9+/]+=*$",
        description="a small JPEG of what the fan sent, for the reviewer only",
    )
    held_at: AwareDatetime


class Feedback(_Contract):
    """A fan's like or report of a reply, on `feedback` (keyed by room), from a chat bot or the overlay's host.

    The reply is named by its `reply_id` (every reply on the overlay carries it); `room` is
    the reply's room, `user` who gave the feedback.
    """

    model_config = ConfigDict(json_schema_extra=_schema_version_required)

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="the integer 1 (a number, not a string)")
    feedback_id: Identifier = Field(description="the producer's idempotency key: the same feedback counts once")
    kind: Literal["like", "report"]
    reply_id: Identifier
    room: Identifier
    user: UserRef
    reason: str | None = Field(default=None, max_length=200, description="why, for a report (free text)")
    at: AwareDatetime = Field(description="when the fan gave it, with its UTC offset")


class ReviewDecision(_Contract):
    """An operator's decision on a held reply, on `review.decisions`: the audit record of the console."""

    schema_version: Literal[1] = SCHEMA_VERSION
    decision_id: Identifier
    reply_id: Identifier
    item_id: Identifier
    room: Identifier
    operator: str = Field(min_length=1, max_length=128, description="who decided (the console token's subject)")
    decision: Literal["approve", "reject"]
    edited: bool = Field(description="the operator changed the text before approving")
    before: str = Field(min_length=1, max_length=2000, description="the held reply's text")
    after: str | None = Field(default=None, max_length=2000, description="the text that went out; None when rejected")
    held_at: AwareDatetime
    at: AwareDatetime


class Retraction(_Contract):
    """A reply taken back, on `replies.retracted` (keyed by room).

    Fans reported it past the room's threshold (`reason` "reports", made by the fans app),
    or an operator retracted it in the console ("operator"). The gateway removes the bubble
    from every overlay showing it and never replays it; exports leave it out.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    retraction_id: Identifier = Field(description="idempotency key: the same retraction acts once")
    reply_id: Identifier
    room: Identifier
    item_id: Identifier | None = Field(default=None, description="the fan's item the reply answered, when known")
    reason: Literal["reports", "operator"]
    reports: int = Field(default=0, ge=0, description="reports counted when it was retracted")
    operator: str | None = Field(default=None, max_length=128, description="who retracted it, for reason operator")
    at: AwareDatetime


class ForgetRequest(_Contract):
    """A fan's request to be forgotten in a room, on `fans.forget` (keyed by room, kept for good).

    The fans app removes their profile and table entries; exports never include them.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: Identifier
    room: Identifier
    user_id: Identifier
    requested_by: str = Field(min_length=1, max_length=128, description="who asked: an operator, or the fan's own bot")
    at: AwareDatetime


CONTRACTS: dict[str, type[_Contract]] = {
    "submission.v1": Submission,
    "reply.v1": Reply,
    "escalation.v1": Escalation,
    "shed_item.v1": ShedItem,
    "reasoning.v1": Reasoning,
    "dead_letter.v1": DeadLetter,
    "moderation_record.v1": ModerationRecord,
    "held_reply.v1": HeldReply,
    "review_decision.v1": ReviewDecision,
    "feedback.v1": Feedback,
    "retraction.v1": Retraction,
    "forget_request.v1": ForgetRequest,
    "draw_request.v1": DrawRequest,
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
