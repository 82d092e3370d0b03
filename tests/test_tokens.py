import pytest

from stream.tokens import Refusal, check_token, issue_token, origin_allowed

SECRET = b"k" * 32
NOW = 1_800_000_000.0


def test_a_token_opens_its_own_room_until_it_expires():
    token = issue_token(SECRET, "room-a", ttl_s=60, now=NOW)
    assert check_token(SECRET, token, "room-a", now=NOW + 59) is None
    assert check_token(SECRET, token, "room-a", now=NOW + 60) is Refusal.EXPIRED


def test_a_token_for_room_a_cannot_read_room_b():
    token = issue_token(SECRET, "room-a", ttl_s=60, now=NOW)
    assert check_token(SECRET, token, "room-b", now=NOW) is Refusal.WRONG_ROOM


def test_a_token_signed_with_another_secret_is_refused():
    token = issue_token(b"x" * 32, "room-a", ttl_s=60, now=NOW)
    assert check_token(SECRET, token, "room-a", now=NOW) is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize("token, refusal", [
    (None, Refusal.MISSING),
    ("", Refusal.MISSING),
    ("not-a-token", Refusal.MALFORMED),
    ("a.b.c", Refusal.MALFORMED),
])
def test_missing_or_garbled_tokens_are_refused(token, refusal):
    assert check_token(SECRET, token, "room-a", now=NOW) is refusal


def test_a_tampered_room_claim_breaks_the_signature():
    import base64

    import orjson

    header, payload, signature = issue_token(SECRET, "room-a", ttl_s=60, now=NOW).split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["room"] = "room-b"
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    assert check_token(SECRET, f"{header}.{forged}.{signature}", "room-b", now=NOW) is Refusal.BAD_SIGNATURE


def test_a_short_secret_is_rejected_when_issuing():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue_token(b"short", "room-a", ttl_s=60)


def test_an_origin_allow_list_admits_only_its_origins():
    allowed = frozenset({"http://127.0.0.1:8765"})
    assert origin_allowed("http://127.0.0.1:8765", allowed)
    assert not origin_allowed("https://evil.example", allowed)
    assert not origin_allowed(None, allowed)
    assert origin_allowed("https://anything.example", frozenset())


def test_an_operator_token_names_its_operator_and_opens_no_overlay():
    from stream.tokens import check_operator_token, issue_operator_token

    operator = issue_operator_token(SECRET, "Rin", 60, now=1000)
    assert check_operator_token(SECRET, operator, now=1030) == ("Rin", None)
    assert check_operator_token(SECRET, operator, now=1061) == (None, Refusal.EXPIRED)
    assert check_token(SECRET, operator, "room-1", now=1030) is not None  # not a room token


def test_a_room_token_opens_no_console():
    from stream.tokens import check_operator_token

    room = issue_token(SECRET, "room-1", 60, now=1000)
    assert check_operator_token(SECRET, room, now=1030) == (None, Refusal.MALFORMED)
    assert check_operator_token(SECRET, None) == (None, Refusal.MISSING)
    assert check_operator_token(b"another secret, also long enough!!", room, now=1030)[1] is Refusal.BAD_SIGNATURE
