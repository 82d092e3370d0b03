"""Building the records a tier produces: replies (answers, holding lines, drafts) and shed records."""

from __future__ import annotations

from datetime import datetime

from stream.contracts import (
    Cue,
    Escalation,
    Reply,
    ReplyRole,
    ShedItem,
    Source,
    Submission,
    Tier,
    Timings,
    new_id,
    utcnow,
)
from stream.reasons import DegradeReason, RouteReason, ShedReason


def build_reply(
    submission: Submission,
    *,
    tier: Tier,
    route_reason: RouteReason,
    model_id: str,
    text: str,
    cue: Cue,
    timings: Timings,
    role: ReplyRole = "answer",
    degraded: DegradeReason | None = None,
    thumbnail: str | None = None,
    persona_version: str | None = None,
) -> Reply:
    return Reply(
        reply_id=new_id(),
        item_id=submission.item_id,
        room=submission.room,
        role=role,
        tier=tier,
        route_reason=route_reason,
        degraded=degraded,
        model_id=model_id,
        text=text,
        cue=cue,
        timings=timings,
        in_reply_to=submission.user,
        thumbnail=thumbnail,
        persona_version=persona_version,
    )


def draft_reply(escalation: Escalation, degraded: DegradeReason, replied_at: datetime | None = None) -> Reply:
    """The fast model's draft (or its persona line) as the item's answer, marked with why."""
    draft = escalation.draft
    timings = escalation.fast_timings.model_copy(update={"replied_at": replied_at or utcnow()})
    return build_reply(
        escalation.item,
        tier=draft.tier,
        route_reason=escalation.reason,
        degraded=degraded,
        model_id=draft.model_id,
        text=draft.text,
        cue=draft.cue,
        timings=timings,
        thumbnail=draft.thumbnail,
        persona_version=draft.persona_version,
    )


def shed_record(submission: Submission, reason: ShedReason, age_s: float, source: Source) -> ShedItem:
    return ShedItem(
        shed_id=new_id(),
        reason=reason,
        item_id=submission.item_id,
        room=submission.room,
        kind=submission.kind,
        user=submission.user,
        age_ms=max(0.0, age_s * 1000),
        source=source,
        at=utcnow(),
    )


def item_age_s(submission: Submission, now: datetime | None = None) -> float:
    return max(0.0, ((now or utcnow()) - submission.created_at).total_seconds())
