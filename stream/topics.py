"""The topics idolstream uses, with their partition counts and configs.

Key = room id everywhere, so one room's items stay in order on one partition. The
image-carrying topics accept one message of `MAX_MESSAGE_BYTES`, the envelope around the
largest admitted image; the producers use the same limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.contracts import MAX_MESSAGE_BYTES

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicNames:
    """Topic names after the configurable prefix (e.g. ``stage.`` gives ``stage.replies``)."""

    prefix: str = ""

    @property
    def fan_images(self) -> str:
        return f"{self.prefix}fan.images"

    @property
    def danmaku_screens(self) -> str:
        return f"{self.prefix}danmaku.screens"

    @property
    def items_deep(self) -> str:
        return f"{self.prefix}items.deep"

    @property
    def items_draw(self) -> str:
        return f"{self.prefix}items.draw"

    @property
    def replies(self) -> str:
        return f"{self.prefix}replies"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}items.dlq"

    @property
    def shed(self) -> str:
        return f"{self.prefix}items.shed"

    @property
    def reasoning(self) -> str:
        return f"{self.prefix}reasoning"

    @property
    def moderation(self) -> str:
        return f"{self.prefix}moderation"

    @property
    def replies_held(self) -> str:
        return f"{self.prefix}replies.held"

    @property
    def review_decisions(self) -> str:
        return f"{self.prefix}review.decisions"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}feedback"

    @property
    def replies_retracted(self) -> str:
        return f"{self.prefix}replies.retracted"

    @property
    def fans_profiles(self) -> str:
        return f"{self.prefix}fans.profiles"

    @property
    def fans_forget(self) -> str:
        return f"{self.prefix}fans.forget"

    @property
    def submissions(self) -> tuple[str, str]:
        return (self.fan_images, self.danmaku_screens)

    def for_kind(self, kind: str) -> str:
        return self.fan_images if kind == "fan_image" else self.danmaku_screens


def topic_plan(names: TopicNames, partitions: int = 6) -> list[TopicSpec]:
    """Every topic with its settings; created idempotently at start."""
    images = {
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
        # Live items are worthless after minutes; keep a few hours for replays and audits.
        "retention.ms": str(6 * HOUR_MS),
        "cleanup.policy": "delete",
    }
    small = {"retention.ms": str(24 * HOUR_MS), "cleanup.policy": "delete"}
    return [
        TopicSpec(names.fan_images, partitions, images),
        TopicSpec(names.danmaku_screens, partitions, images),
        TopicSpec(names.items_deep, partitions, images),
        # Drawing requests carry the fan's picture (a pose, a sketch, a photo to draw her into).
        TopicSpec(names.items_draw, partitions, images),
        TopicSpec(names.replies, partitions, small),
        # The DLQ keeps originals (or their digest) for a week so operators can replay them.
        TopicSpec(names.dlq, 1, {**images, "retention.ms": str(7 * 24 * HOUR_MS)}),
        # Shed items wait here for a later thank-you; thoughts are kept for operators.
        TopicSpec(names.shed, partitions, small),
        TopicSpec(names.reasoning, partitions, small),
        TopicSpec(names.feedback, partitions, small),
        # Verdicts that stopped or held something, and operators' decisions: kept for audits.
        TopicSpec(names.moderation, partitions, {**small, "retention.ms": str(30 * 24 * HOUR_MS)}),
        # Replies waiting for an operator; the gateway never reads them.
        TopicSpec(names.replies_held, partitions, {**small, "retention.ms": str(7 * 24 * HOUR_MS)}),
        # Operators' decisions on held replies (who, when, what, before and after): the audit trail.
        TopicSpec(names.review_decisions, partitions, {**small, "retention.ms": str(30 * 24 * HOUR_MS)}),
        # Replies taken back (reports past the threshold, an operator): kept as long as replies are replayed.
        TopicSpec(names.replies_retracted, partitions, {**small, "retention.ms": str(7 * 24 * HOUR_MS)}),
        # What she remembers of each fan, keyed "room user": the latest profile, or a tombstone once forgotten.
        TopicSpec(names.fans_profiles, partitions, {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}),
        # Fans who asked to be forgotten: kept for good, so no export ever includes them.
        TopicSpec(names.fans_forget, partitions, {"cleanup.policy": "delete", "retention.ms": "-1"}),
    ]
