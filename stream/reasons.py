"""The vocabularies of why: why an item took its route, why it was degraded, why it was shed,
why a reply may not go out, and what moderation decided at which stage.

They sit at the bottom with the contracts that carry them (on replies, shed records and
metric labels); the policies that decide (routing, shedding) import them from here.
DLQ reason codes live with the errors that raise them, in `stream.errors`.
"""

from __future__ import annotations

from enum import StrEnum


class RouteReason(StrEnum):
    SIMPLE = "simple"  # nothing pointed at the deep tier
    MATHS = "maths"
    LONG_TEXT = "long_text"
    DENSE_SCREENSHOT = "dense_screenshot"
    QUESTION = "question"
    MODEL_VERDICT = "model_verdict"  # the fast model tagged the item as needing thought
    DRAW_REQUEST = "draw_request"  # the fan's words ask her to draw (zh, en, ja patterns)
    DRAW_VERDICT = "draw_verdict"  # the fast model tagged the item [draw]


class DegradeReason(StrEnum):
    """Why an item did not get the answer its route asked for."""

    DEEP_UNAVAILABLE = "deep_unavailable"  # circuit open: the fast tier answered itself
    ESCALATION_BACKLOG = "escalation_backlog"  # too many escalations waiting on the deep tier
    DEEP_DEADLINE = "deep_deadline"  # the deep answer was not ready in time: the draft went out
    MODEL_SWITCHING = "model_switching"  # no model loaded while a worker switches
    MODEL_ERROR = "model_error"  # the model failed on this item: a persona line went out
    EMPTY_ANSWER = "empty_answer"  # the model said nothing usable: a persona line went out
    PERSONA_CHECK = "persona_check"  # the reply failed the persona checks, regenerated or not: a persona line went out
    MODERATION_BLOCKED = "moderation_blocked"  # moderation blocked the reply: a persona line went out
    DRAW_DEADLINE = "draw_deadline"  # the picture was not drawn in time: her apology went out
    DRAW_FAILED = "draw_failed"  # the draw pipeline failed on this request: her apology went out
    DRAW_UNAVAILABLE = "draw_unavailable"  # the draw tier is off or its circuit open: the fast tier answered


class ShedReason(StrEnum):
    """Why an item was deliberately not answered (it is recorded for a later thank-you)."""

    STALE = "stale"  # older than its max age when it reached a model
    USER_RATE_LIMITED = "user_rate_limited"
    ROOM_PACED = "room_paced"  # the room had its replies for this window
    DUPLICATE = "duplicate"  # this item id was already taken in


ESCALATION_REASONS = frozenset(
    {RouteReason.MATHS, RouteReason.LONG_TEXT, RouteReason.DENSE_SCREENSHOT, RouteReason.QUESTION, RouteReason.MODEL_VERDICT}
)


class ReplyMiss(StrEnum):
    """Why a model's reply may not go out as written (`stream.persona.checks`)."""

    TOO_LONG = "too_long"  # does not fit her speech bubble
    TOO_SHORT = "too_short"
    LANGUAGE_NOT_SPOKEN = "language_not_spoken"
    NOT_FAN_LANGUAGE = "not_fan_language"  # she speaks the fan's language but answered in another
    FORBIDDEN_TOPIC = "forbidden_topic"
    CONTROL_TOKENS = "control_tokens"  # chat-template tokens, also made inert (full-width) ones
    MARKUP = "markup"  # HTML, Markdown, code, links
    REASONING = "reasoning"  # thinking leftovers, talk about "the user" or being a model


class ModerationAction(StrEnum):
    """`allow`: show it; `review`: hold it for an operator; `block`: never show it."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return ("allow", "review", "block").index(self.value)


class ModerationStage(StrEnum):
    """Which check reached a moderation verdict."""

    WORD_FILTER = "word_filter"
    TEXT_GUARD = "text_guard"
    IMAGE_GUARD = "image_guard"
    HUMAN = "human"


class ModerationSide(StrEnum):
    """What was judged: what a fan sent, or what she would say."""

    FAN = "fan"
    REPLY = "reply"
