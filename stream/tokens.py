"""Room tokens: who may read a room's replies on the overlay gateway; operator tokens: who may use the console.

A token is an HS256 JWT signed with the gateway's secret, naming one room and an expiry
(`idolstream token --room R --ttl S`). Any JWT library can issue one, so a control panel
in another language can hand out overlay URLs. Checking a token says yes, or why not;
the gateway turns the why into a close code and a refusal metric.
"""

from __future__ import annotations

import time
from enum import StrEnum

import jwt

AUDIENCE = "idolstream-overlay"
OPERATOR_AUDIENCE = "idolstream-console"  # never accepted by the gateway, nor a room token by the console
MIN_SECRET_BYTES = 32  # RFC 7518: an HS256 key at least as long as the hash


class Refusal(StrEnum):
    MISSING = "missing_token"
    MALFORMED = "malformed_token"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired_token"
    WRONG_ROOM = "wrong_room"
    ORIGIN = "origin_not_allowed"


# Websocket close codes (4000-4999 are the application's), HTTP-like on purpose.
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_CODES = {
    Refusal.MISSING: CLOSE_UNAUTHORIZED,
    Refusal.MALFORMED: CLOSE_UNAUTHORIZED,
    Refusal.BAD_SIGNATURE: CLOSE_UNAUTHORIZED,
    Refusal.EXPIRED: CLOSE_UNAUTHORIZED,
    Refusal.WRONG_ROOM: CLOSE_FORBIDDEN,
    Refusal.ORIGIN: CLOSE_FORBIDDEN,
}


def issue_token(secret: bytes, room: str, ttl_s: float, now: float | None = None) -> str:
    """A token for `room` that expires `ttl_s` seconds from `now`."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the overlay secret must be at least {MIN_SECRET_BYTES} bytes")
    issued = int(time.time() if now is None else now)
    claims = {"room": room, "aud": AUDIENCE, "iat": issued, "exp": issued + max(1, int(ttl_s))}
    return jwt.encode(claims, secret, algorithm="HS256")


def check_token(secret: bytes, token: str | None, room: str, now: float | None = None) -> Refusal | None:
    """None when `token` lets its bearer read `room` at `now`; otherwise why it does not."""
    if not token:
        return Refusal.MISSING
    options = {"require": ["exp", "room", "aud"], "verify_exp": False, "verify_iat": False}
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE, options=options)
    except jwt.InvalidSignatureError:
        return Refusal.BAD_SIGNATURE
    except jwt.InvalidTokenError:
        return Refusal.MALFORMED
    if _expired(claims, now):
        return Refusal.EXPIRED
    if claims["room"] != room:
        return Refusal.WRONG_ROOM
    return None


def _expired(claims: dict, now: float | None) -> bool:
    """Expiry is checked here rather than by PyJWT so that `now` can be given."""
    expires = claims["exp"]
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        return True
    return expires <= (time.time() if now is None else now)


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """An empty allow-list admits everyone; a set one admits only the origins it names.

    Browsers always send `Origin`; with a list set, a client that sends none is refused too.
    """
    return not allowed or origin in allowed


def issue_operator_token(secret: bytes, operator: str, ttl_s: float, now: float | None = None) -> str:
    """A console token for `operator` (the name every decision they take is recorded under)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the console secret must be at least {MIN_SECRET_BYTES} bytes")
    if not operator.strip():
        raise ValueError("an operator token names its operator")
    issued = int(time.time() if now is None else now)
    claims = {"sub": operator, "aud": OPERATOR_AUDIENCE, "iat": issued, "exp": issued + max(1, int(ttl_s))}
    return jwt.encode(claims, secret, algorithm="HS256")


def check_operator_token(
    secret: bytes, token: str | None, now: float | None = None
) -> tuple[str | None, Refusal | None]:
    """``(operator, None)`` when `token` is a valid console token at `now`, else ``(None, why not)``."""
    if not token:
        return None, Refusal.MISSING
    options = {"require": ["exp", "sub", "aud"], "verify_exp": False, "verify_iat": False}
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=OPERATOR_AUDIENCE, options=options)
    except jwt.InvalidSignatureError:
        return None, Refusal.BAD_SIGNATURE
    except jwt.InvalidTokenError:
        return None, Refusal.MALFORMED
    if _expired(claims, now):
        return None, Refusal.EXPIRED
    operator = claims["sub"]
    if not isinstance(operator, str) or not operator.strip():
        return None, Refusal.MALFORMED
    return operator, None
