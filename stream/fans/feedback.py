"""Likes and reports tallied per reply and per model id and persona version. Pure, serialisable.

The fans app keeps one `ReplyTally` per reply id and one `ModelTally` per (model id,
persona version); answers are counted from the replies topic, likes and reports from the
feedback topic. `counts_once` keeps a feedback id from counting twice on redelivery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from stream.contracts import Feedback, Reply


@dataclass(frozen=True)
class ReplyTally:
    reply_id: str
    room: str
    model_id: str | None = None  # known once the reply itself was read
    persona_version: str | None = None
    likes: int = 0
    reports: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelTally:
    model_id: str
    persona_version: str | None
    answers: int = 0
    likes: int = 0
    reports: int = 0

    @property
    def like_rate(self) -> float:
        """Likes per answer (0 before the first answer)."""
        return self.likes / self.answers if self.answers else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "like_rate": round(self.like_rate, 4)}


def model_key(model_id: str, persona_version: str | None) -> str:
    return f"{model_id} {persona_version or '-'}"


def tally_reply(tally: ReplyTally | None, reply: Reply) -> ReplyTally:
    """The reply's tally once the reply itself is read (feedback may have come first)."""
    tally = tally or ReplyTally(reply.reply_id, reply.room)
    return replace(tally, model_id=reply.model_id, persona_version=reply.persona_version)


def tally_feedback(tally: ReplyTally | None, feedback: Feedback) -> ReplyTally:
    tally = tally or ReplyTally(feedback.reply_id, feedback.room)
    if feedback.kind == "like":
        return replace(tally, likes=tally.likes + 1)
    return replace(tally, reports=tally.reports + 1)


def tally_answer(tally: ModelTally | None, reply: Reply) -> ModelTally:
    tally = tally or ModelTally(reply.model_id, reply.persona_version)
    return replace(tally, answers=tally.answers + (reply.role == "answer"))


def tally_model_feedback(tally: ModelTally | None, reply: ReplyTally, feedback: Feedback) -> ModelTally | None:
    """The model's tally after feedback on one of its replies; None while the reply's model is unknown."""
    if reply.model_id is None:
        return tally
    tally = tally or ModelTally(reply.model_id, reply.persona_version)
    if feedback.kind == "like":
        return replace(tally, likes=tally.likes + 1)
    return replace(tally, reports=tally.reports + 1)


def over_report_threshold(tally: ReplyTally, threshold: int) -> bool:
    """Reports enough to retract the reply (0 turns retraction by reports off)."""
    return threshold > 0 and tally.reports >= threshold
