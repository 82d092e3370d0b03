import base64

import orjson
import pytest

from stream.contracts import (
    SCHEMA_DIR,
    DeadLetter,
    Source,
    Submission,
    dead_letter_for,
    decode_submission,
    json_schemas,
)
from stream.errors import InvalidEnvelope, ReasonCode
from producers.client import build_submission


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
