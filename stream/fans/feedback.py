"""Likes and reports tallied per reply and per model id and persona version. Pure, serialisable.

The fans app keeps one `ReplyTally` per reply id and one `ModelTally` per (model id,
persona version); answers are counted from the replies topic, likes and reports from the
feedback topic. Kafka delivers at least once: a tally remembers the last feedback ids it
counted (`RECENT_FEEDBACK`) and whether it has seen its reply, so a record read again
after a crash changes nothing; every `tally_*` says whether it counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from stream.contracts import Feedback, Reply

RECENT_FEEDBACK = 64  # feedback ids remembered per reply: more than a crash can make a worker read twice


@dataclass(frozen=True)
class ReplyTally:
    reply_id: str
    room: str
    model_id: str | None = None  # known once the reply itself was read
    persona_version: str | None = None
    tier: str | None = None
    item_id: str | None = None
    answered_at: str | None = None  # ISO time the reply went out
    likes: int = 0
    reports: int = 0
    retracted: bool = False
    recent_feedback: tuple[str, ...] = ()

    @property
    def seen_reply(self) -> bool:
        return self.model_id is not None

    def to_json(self) -> dict:
        return {**asdict(self), "recent_feedback": list(self.recent_feedback)}

    @classmethod
    def from_json(cls, data: dict) -> ReplyTally:
        """From `to_json`'s dict; keys a store added around it are ignored."""
        known = {f.name for f in fields(cls)} - {"recent_feedback"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   recent_feedback=tuple(data.get("recent_feedback", ())))


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

    @classmethod
    def from_json(cls, data: dict) -> ModelTally:
        return cls(**{k: v for k, v in data.items() if k != "like_rate"})

    def __add__(self, other: ModelTally) -> ModelTally:
        return replace(self, answers=self.answers + other.answers, likes=self.likes + other.likes,
                       reports=self.reports + other.reports)


def model_key(model_id: str, persona_version: str | None) -> str:
    return f"{model_id} {persona_version or '-'}"


def tally_reply(tally: ReplyTally | None, reply: Reply) -> tuple[ReplyTally, bool]:
    """The reply's tally once the reply itself is read (feedback may have come first); True the first time."""
    tally = tally or ReplyTally(reply.reply_id, reply.room)
    if tally.seen_reply:
        return tally, False
    return replace(tally, model_id=reply.model_id, persona_version=reply.persona_version, tier=reply.tier,
                   item_id=reply.item_id, answered_at=reply.timings.replied_at.isoformat()), True


def tally_feedback(tally: ReplyTally | None, feedback: Feedback) -> tuple[ReplyTally, bool]:
    """The tally after one like or report; False when that feedback id was counted already."""
    tally = tally or ReplyTally(feedback.reply_id, feedback.room)
    if feedback.feedback_id in tally.recent_feedback:
        return tally, False
    recent = (*tally.recent_feedback, feedback.feedback_id)[-RECENT_FEEDBACK:]
    if feedback.kind == "like":
        return replace(tally, likes=tally.likes + 1, recent_feedback=recent), True
    return replace(tally, reports=tally.reports + 1, recent_feedback=recent), True


def tally_answer(tally: ModelTally | None, reply: Reply) -> ModelTally:
    tally = tally or ModelTally(reply.model_id, reply.persona_version)
    return replace(tally, answers=tally.answers + (reply.role == "answer"))


def tally_model_feedback(tally: ModelTally | None, reply: ReplyTally, kind: str) -> ModelTally | None:
    """The model's tally after a like or report on one of its replies; unchanged while the reply's model is unknown."""
    if reply.model_id is None:
        return tally
    tally = tally or ModelTally(reply.model_id, reply.persona_version)
    if kind == "like":
        return replace(tally, likes=tally.likes + 1)
    return replace(tally, reports=tally.reports + 1)


def tally_early_feedback(tally: ModelTally | None, reply: ReplyTally) -> ModelTally:
    """The model's tally when its reply is read after feedback on it was: the likes and reports so far."""
    tally = tally or ModelTally(reply.model_id or "-", reply.persona_version)
    return replace(tally, likes=tally.likes + reply.likes, reports=tally.reports + reply.reports)


def over_report_threshold(tally: ReplyTally, threshold: int) -> bool:
    """Reports enough to retract the reply (0 turns retraction by reports off)."""
    return threshold > 0 and tally.reports >= threshold


def should_retract(tally: ReplyTally, threshold: int) -> bool:
    """Over the threshold and not retracted yet: a reply is retracted once."""
    return not tally.retracted and over_report_threshold(tally, threshold)
