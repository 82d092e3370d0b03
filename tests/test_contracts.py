import base64
import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from producers.client import build_submission
from stream.contracts import (
    MAX_CLOCK_SKEW_S,
    MAX_IMAGE_BASE64_CHARS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_DATA_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_THUMBNAIL_CHARS,
    SCHEMA_DIR,
    Cue,
    DeadLetter,
    Draft,
    Escalation,
    ImagePayload,
    Source,
    Submission,
    Timings,
    dead_letter_for,
    decode_submission,
    json_schemas,
    utcnow,
)
from stream.errors import InvalidEnvelope, ReasonCode
from stream.images import ImageLimits, admit_image, decode_base64_image
from stream.replies import item_age_s
from stream.reasons import RouteReason, ShedReason
from stream.settings import FastTierSettings, describe_settings
from stream.shedding import Arrival, LoadShedder, SheddingPolicy


def encoded_png(size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).save(buffer, "PNG")  # noise: long enough base64 to wrap
    return buffer.getvalue()


def good_submission(**overrides) -> Submission:
    fields = dict(room="room-1", user_id="u-1", display_name="Aki", image_bytes=b"\x89PNG....", mime="image/png")
    fields.update(overrides)
    return build_submission(**fields)


def test_a_submission_survives_its_own_encoding():
    sub = good_submission(text="hello", lang="en")
    assert decode_submission(sub.to_json()) == sub


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", ReasonCode.INVALID_JSON),
        (b"", ReasonCode.INVALID_JSON),
        (b"[1, 2]", ReasonCode.SCHEMA_VIOLATION),
        (b'{"schema_version": 2, "item_id": "x"}', ReasonCode.UNSUPPORTED_SCHEMA_VERSION),
        (b'{"item_id": "x"}', ReasonCode.UNSUPPORTED_SCHEMA_VERSION),
    ],
)
def test_broken_envelopes_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(InvalidEnvelope) as info:
        decode_submission(raw)
    assert info.value.reason == reason


def test_wrong_types_and_unknown_fields_are_schema_violations_naming_the_field():
    obj = orjson.loads(good_submission().to_json())
    obj["room"] = 42
    obj["surprise"] = True
    with pytest.raises(InvalidEnvelope) as info:
        decode_submission(orjson.dumps(obj))
    assert info.value.reason == ReasonCode.SCHEMA_VIOLATION
    assert "room" in info.value.detail and "surprise" in info.value.detail


def test_a_naive_timestamp_is_refused():
    obj = orjson.loads(good_submission().to_json())
    obj["created_at"] = "2026-01-01T12:00:00"
    with pytest.raises(InvalidEnvelope, match="created_at"):
        decode_submission(orjson.dumps(obj))


def test_room_ids_that_would_break_keys_or_urls_are_refused():
    with pytest.raises(ValueError):
        good_submission(room="room/../../etc")


def test_dead_letter_keeps_small_originals_and_only_a_digest_of_large_ones():
    source = Source(topic="fan.images", partition=0, offset=7, key="r")
    small = dead_letter_for(b"abc", ReasonCode.INVALID_JSON, "x", source, max_original_bytes=10)
    large = dead_letter_for(b"a" * 11, ReasonCode.INVALID_JSON, "x", source, max_original_bytes=10)
    assert base64.b64decode(small.original_base64) == b"abc"
    assert large.original_base64 is None and large.original_size == 11 and len(large.original_sha256) == 64
    assert DeadLetter.model_validate_json(large.to_json()) == large


def test_exported_json_schemas_match_the_models():
    """Bot authors validate against these files; `idolstream schemas` regenerates them."""
    for name, text in json_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{name} is missing: run `idolstream schemas`"
        assert path.read_bytes() == text, f"{name} is stale: run `idolstream schemas`"


# -- what bots in other languages send -------------------------------------------------

SUBMISSION_SCHEMA = Draft202012Validator(orjson.loads((SCHEMA_DIR / "submission.v1.schema.json").read_bytes()))
PNG = encoded_png()
PNG_BASE64 = base64.b64encode(PNG).decode()
MIME_WRAPPED = base64.encodebytes(PNG).decode().replace("\n", "\r\n")  # 76 columns, CRLF


def as_sent(**changes) -> dict:
    """A valid submission as JSON text would carry it, with `changes` (dotted keys reach into image)."""
    obj = orjson.loads(good_submission(image_bytes=PNG).to_json())
    for key, value in changes.items():
        target, _, name = key.rpartition(".")
        (obj[target] if target else obj)[name] = value
    return obj


@pytest.mark.parametrize(
    "data",
    [
        PNG_BASE64,
        base64.encodebytes(PNG).decode(),  # `base64` and Python: 76 columns, \n, a final \n
        MIME_WRAPPED,
        "\n".join(PNG_BASE64[i : i + 64] for i in range(0, len(PNG_BASE64), 64)),  # PEM, no final \n
        "data:image/png;base64," + PNG_BASE64,  # a browser's readAsDataURL
        "data:image/png;base64," + MIME_WRAPPED,
    ],
    ids=["bare", "base64-76", "mime-crlf", "pem-64", "data-uri", "data-uri-wrapped"],
)
def test_wrapped_and_data_uri_images_are_admitted_as_the_same_picture(data):
    sent = as_sent(**{"image.data": data})
    assert SUBMISSION_SCHEMA.is_valid(sent)
    sub = decode_submission(orjson.dumps(sent))
    raw = decode_base64_image(sub.image.data)  # what both tiers decode
    assert raw == PNG == sub.image.raw_bytes()
    assert admit_image(raw, ImageLimits()).original_size == (48, 40)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"image.data": "data:image/jpeg;base64," + PNG_BASE64}, "set mime to image/jpeg"),
        ({"image.data": "data:application/octet-stream;base64," + PNG_BASE64}, "data-URI prefix data:<mime>"),
        ({"image.data": PNG_BASE64[:40] + " " + PNG_BASE64[40:]}, "no other whitespace"),
        ({"image.data": "\n".join(PNG_BASE64[i : i + 40] for i in range(0, len(PNG_BASE64), 40))}, "64 or more"),
        ({"image.data": PNG_BASE64.replace("+", "-").replace("/", "_")}, "A-Z a-z 0-9 + /"),
        ({"schema_version": "1"}, 'schema_version must be the integer 1, not the string "1"'),
        ({"schema_version": True}, "schema_version must be the integer 1, not true"),
    ],
    ids=["other-mime-uri", "non-image-uri", "space", "short-lines", "base64url", "version-string",
         "version-bool"],
)
def test_what_the_schema_refuses_is_a_schema_violation_that_says_what_to_send(changes, says):
    sent = as_sent(**changes)
    if "-" not in changes.get("image.data", ""):  # base64url: one URL-safe character is enough
        assert not SUBMISSION_SCHEMA.is_valid(sent), "a bot validating against the schema learns it first"
    with pytest.raises(InvalidEnvelope) as info:
        decode_submission(orjson.dumps(sent))
    assert info.value.reason == ReasonCode.SCHEMA_VIOLATION
    assert says in info.value.detail


def test_a_version_written_as_1_0_is_the_integer_1_as_json_schema_counts_it():
    sent = as_sent(schema_version=1.0)
    assert SUBMISSION_SCHEMA.is_valid(sent)
    assert decode_submission(orjson.dumps(sent)).schema_version == 1


@pytest.mark.parametrize("version", [2, None], ids=["other-version", "missing"])
def test_a_version_this_service_does_not_read_is_unsupported(version):
    sent = as_sent(schema_version=version)
    if version is None:
        del sent["schema_version"]
    assert not SUBMISSION_SCHEMA.is_valid(sent), "the schema requires schema_version: 1"
    with pytest.raises(InvalidEnvelope) as info:
        decode_submission(orjson.dumps(sent))
    assert info.value.reason == ReasonCode.UNSUPPORTED_SCHEMA_VERSION


def largest_submission(data: str, text: str = "\x01" * 500) -> Submission:
    """The most bytes a submission can take: control characters are escaped to six bytes each."""
    return build_submission(
        room="r" * 128, user_id="u" * 128, display_name="\x01" * 64, image_bytes=b"png", mime="image/png",
        item_id="i" * 128, text=text, lang="zh-Hant",
    ).model_copy(update={"image": ImagePayload(mime="image/jpeg", data=data)})


def escalation_of(sub: Submission) -> Escalation:
    now = utcnow()
    timings = Timings(item_created_at=now, queue_ms=0, admission_ms=0, inference_ms=0, replied_at=now)
    draft = Draft(text="\x01" * 2000, cue=Cue(emotion="happy", motion="m" * 32), tier="fast", model_id="m" * 200,
                  thumbnail="data:image/jpeg;base64," + "A" * (MAX_THUMBNAIL_CHARS - 23))
    return Escalation(
        escalation_id="e" * 128, item=sub, draft=draft, reason=RouteReason.LONG_TEXT, escalated_at=now,
        deadline_at=now, holding_sent=True, fast_timings=timings,
        source=Source(topic="t" * 249, partition=2**31 - 1, offset=2**63 - 1, key="r" * 128),
    )


@pytest.mark.parametrize(
    "data",
    [
        "A" * MAX_IMAGE_BASE64_CHARS,  # the largest image, bare
        "data:image/jpeg;base64," + base64.encodebytes(b"\0" * MAX_IMAGE_BYTES).decode().replace("\n", "\r\n"),
        # as many line breaks as the pattern allows, up to the longest accepted text
        ("A" * 64 + "\r\n") * (MAX_IMAGE_DATA_CHARS // 66) + "A" * (MAX_IMAGE_DATA_CHARS % 66 // 4 * 4),
    ],
    ids=["bare-4MiB", "data-uri-crlf-4MiB", "densest-wrapping"],
)
def test_the_largest_accepted_submission_and_its_escalation_fit_the_topics(data):
    assert len(data) <= MAX_IMAGE_DATA_CHARS
    raw = largest_submission(data).to_json()
    assert decode_submission(raw).image.data == data
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert len(escalation_of(decode_submission(raw)).to_json()) <= MAX_MESSAGE_BYTES


def test_image_data_past_its_longest_accepted_form_is_refused():
    with pytest.raises(ValueError, match="at most"):
        largest_submission("A" * (MAX_IMAGE_DATA_CHARS + 1))


# -- clocks ------------------------------------------------------------------------------

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def sent_at(created_at: datetime) -> bytes:
    return good_submission(created_at=created_at).to_json()


def test_a_created_at_far_in_the_future_is_refused_naming_the_clock_skew():
    with pytest.raises(InvalidEnvelope) as info:
        decode_submission(sent_at(datetime(2100, 1, 1, tzinfo=UTC)), now=NOW)
    assert info.value.reason == ReasonCode.SCHEMA_VIOLATION
    assert "created_at 2100-01-01T00:00:00+00:00" in info.value.detail
    assert f"{MAX_CLOCK_SKEW_S:g} s of clock skew" in info.value.detail


def test_the_clock_skew_accepted_is_a_bound_the_operator_sets():
    ahead = sent_at(NOW + timedelta(seconds=MAX_CLOCK_SKEW_S))
    assert decode_submission(ahead, now=NOW).created_at > NOW
    with pytest.raises(InvalidEnvelope, match="clock skew"):
        decode_submission(sent_at(NOW + timedelta(seconds=MAX_CLOCK_SKEW_S + 1)), now=NOW)
    assert decode_submission(sent_at(NOW + timedelta(minutes=30)), now=NOW, max_clock_skew_s=3600)
    assert FastTierSettings().max_clock_skew_s == MAX_CLOCK_SKEW_S
    assert "IDOLSTREAM_MAX_CLOCK_SKEW_S" in describe_settings(FastTierSettings), "`idolstream --help` lists it"


def test_an_item_ahead_within_the_skew_is_fresh_until_the_clock_passes_it_then_goes_stale():
    sub = decode_submission(sent_at(NOW + timedelta(seconds=50)), now=NOW)
    shedder = LoadShedder(SheddingPolicy(max_age_s=30, user_max_items=0, room_max_replies=0))
    assert item_age_s(sub, NOW) == 0
    assert shedder.triage([Arrival("a", "r", "u", item_age_s(sub, NOW))], 0.0) == [None]
    late = NOW + timedelta(seconds=50 + 31)
    assert shedder.triage([Arrival("b", "r", "u", item_age_s(sub, late))], 81.0) == [ShedReason.STALE]
