"""Moderation verdicts turned into what happens: pure, for both sides.

Fan side (`judge_fan`): the word filter reads the fan's display name and text. Its verdict,
and the guards' (`guard_record`), decide the item: `block`, never answered; `review`,
answered but held for an operator; `allow`.

Reply side (`ReplyScreen`): every line that would reach the overlay (answers, holding
lines, fallback lines, drafts, from either tier) goes through the word filter before it
is produced. A blocked line is replaced by the persona's fallback line (checked against
the same list when the screen is built, so the replacement always passes); a line to
review, or an answer to an item held for review, goes to the held topic instead.

Every verdict that stops or holds something becomes a `ModerationRecord` with its stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from stream.contracts import HeldReply, ModerationRecord, Reply, Submission, new_id
from stream.errors import ConfigError
from stream.moderation.actions import most_severe
from stream.moderation.guard import GuardPolicy, GuardVerdict
from stream.moderation.text_filter import TextFilter, TextVerdict
from stream.persona import Persona, detect_language
from stream.reasons import DegradeReason, ModerationAction, ModerationSide, ModerationStage

DETAIL_CHARS = 1000


@dataclass(frozen=True)
class Judgement:
    """What moderation decided about one item or line, and the records that say why."""

    action: ModerationAction
    records: tuple[ModerationRecord, ...] = ()

    @classmethod
    def of(cls, records: list[ModerationRecord]) -> Judgement:
        return cls(most_severe([r.action for r in records]), tuple(records))

    def joined(self, records: list[ModerationRecord]) -> Judgement:
        return Judgement.of([*self.records, *records])


ALLOW = Judgement(ModerationAction.ALLOW)


def _matches_detail(verdict: TextVerdict, what: str) -> str:
    found = "; ".join(f"{m.category}: {m.text!r} ({m.via})" for m in verdict.matches)
    return f"{what}: {found}"[:DETAIL_CHARS]


def _record(submission: Submission, side: ModerationSide, stage: ModerationStage, action: ModerationAction,
            categories: list[str], detail: str, now: datetime, reply_id: str | None = None) -> ModerationRecord:
    return ModerationRecord(
        record_id=new_id(), item_id=submission.item_id, room=submission.room, user=submission.user, side=side,
        stage=stage, action=action, categories=sorted(set(categories))[:20], detail=detail[:DETAIL_CHARS],
        reply_id=reply_id, at=now,
    )


def judge_fan(text_filter: TextFilter, submission: Submission, now: datetime) -> Judgement:
    """The word filter's verdict on what a fan sent: their display name and their text."""
    records = []
    for what, text in (("display name", submission.user.display_name), ("text", submission.text)):
        if not text:
            continue
        verdict = text_filter.check(text)
        if verdict.action != ModerationAction.ALLOW:
            records.append(_record(submission, ModerationSide.FAN, ModerationStage.WORD_FILTER,
                                   ModerationAction(verdict.action), list(verdict.categories),
                                   _matches_detail(verdict, what), now))
    return Judgement.of(records)


def guard_record(submission: Submission, verdict: GuardVerdict, policy: GuardPolicy, side: ModerationSide,
                 now: datetime, reply_id: str | None = None) -> ModerationRecord | None:
    """A guard's verdict as a record, or None when it allows the thing judged."""
    action = ModerationAction(policy.action(verdict))
    if action == ModerationAction.ALLOW:
        return None
    stage = ModerationStage(verdict.stage)
    detail = verdict.problem or verdict.raw
    return _record(submission, side, stage, action, [verdict.safety, *verdict.categories], detail, now, reply_id)


@dataclass(frozen=True)
class Screened:
    """A reply after the screen: what to send to the overlay, what to hold, and the records of why."""

    send: Reply | None
    held: HeldReply | None
    records: list[ModerationRecord] = field(default_factory=list)


class ReplyScreen:
    """The last check before a line is produced to the replies topic (see the module docstring)."""

    def __init__(self, text_filter: TextFilter, persona: Persona) -> None:
        problems = []
        for line in [*persona.spoken_lines(), *persona.catchphrases]:
            verdict = text_filter.check(line)
            if verdict.action != ModerationAction.ALLOW:
                problems.append(f"{line!r}: {', '.join(verdict.categories)}")
        if problems:
            raise ConfigError(
                "the persona's own lines are stopped by the moderation word list, so a blocked reply would have "
                "no line to replace it: " + "; ".join(problems)
            )
        self.text_filter = text_filter
        self.persona = persona

    def screen(self, reply: Reply, now: datetime, *, held_by: tuple[ModerationRecord, ...] = (),
               fan_text: str | None = None, picture: str | None = None) -> Screened:
        """`held_by`: the verdicts that already hold this item (its fan side was held for review)."""
        verdict = self.text_filter.check(reply.text)
        records = []
        if verdict.action != ModerationAction.ALLOW:
            records.append(ModerationRecord(
                record_id=new_id(), item_id=reply.item_id, room=reply.room, user=reply.in_reply_to,
                side=ModerationSide.REPLY, stage=ModerationStage.WORD_FILTER, action=ModerationAction(verdict.action),
                categories=sorted(verdict.categories)[:20], detail=_matches_detail(verdict, "reply"),
                reply_id=reply.reply_id, at=now,
            ))
        if verdict.action == ModerationAction.BLOCK:
            reply = self.replaced(reply)
        why = [*held_by, *(r for r in records if r.action == ModerationAction.REVIEW)]
        if why:
            return Screened(None, HeldReply(reply=reply, why=why[:10], fan_text=fan_text, picture=picture,
                                            held_at=now), records)
        return Screened(reply, None, records)

    def replaced(self, reply: Reply) -> Reply:
        """`reply` with its text replaced by her fallback line, in its language when she speaks it."""
        language = detect_language(reply.text, self.persona.languages)
        line = self.persona.fallback_line(reply.item_id, language)
        return reply.model_copy(update={
            "text": line, "tier": "fallback", "degraded": DegradeReason.MODERATION_BLOCKED,
            "cue": reply.cue.model_copy(update={"emotion": "happy", "motion": self.persona.motion_for("happy")}),
        })
