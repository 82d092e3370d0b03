"""A tier's moderation stages, run on what fans send and, with a text guard, on her answers.

The word filter always runs (on replies, in `Outputs`' screen); the text guard (fans' texts
and her answers) and the image guard (fans' pictures) run when the settings name a
registry model for them. Guards run in a worker thread, one batched call per
micro-batch; a guard that fails holds the batch's items for review (a guard that cannot
judge must not let things through, nor silently drop fans' items).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from stream.contracts import ModerationRecord, Submission, new_id, utcnow
from stream.metrics import WorkerMetrics
from stream.moderation.gate import Judgement, judge_fan, guard_record
from stream.moderation.guard import GuardPolicy, ImageGuard, TextGuard
from stream.moderation.text_filter import TextFilter
from stream.reasons import ModerationAction, ModerationSide, ModerationStage

log = logging.getLogger("idolstream.moderation")


def count(metrics: WorkerMetrics, records: Sequence[ModerationRecord]) -> None:
    for record in records:
        metrics.moderation_verdicts.labels(record.side, record.stage, record.action).inc()
        for category in record.categories:
            metrics.moderation_categories.labels(record.side, record.stage, category).inc()


@dataclass
class FanVerdicts:
    judgement: Judgement
    image_passed: bool  # an image guard ran on the picture and allowed it


class FanModeration:
    def __init__(self, text_filter: TextFilter, text_guard: TextGuard | None, image_guard: ImageGuard | None,
                 policy: GuardPolicy, metrics: WorkerMetrics) -> None:
        self.text_filter = text_filter
        self.text_guard = text_guard
        self.image_guard = image_guard
        self.policy = policy
        self.metrics = metrics

    def words(self, submission: Submission) -> Judgement:
        """The word filter on the fan's display name and text (cheap: every item, before shedding)."""
        judgement = judge_fan(self.text_filter, submission, utcnow())
        count(self.metrics, judgement.records)
        return judgement

    async def guards(self, items: list[tuple[Submission, Image.Image]]) -> list[FanVerdicts]:
        """The guards' verdicts on each item's text and picture (allow for all when no guard is set)."""
        found: list[list[ModerationRecord]] = [[] for _ in items]
        passed = [False] * len(items)
        now = utcnow()
        if self.image_guard is not None and items:
            try:
                verdicts = await asyncio.to_thread(self.image_guard.judge, [image for _, image in items])
            except Exception as exc:  # noqa: BLE001 - a guard that cannot judge holds the batch
                log.warning("image guard failed on %d pictures; holding them for review", len(items), exc_info=True)
                verdicts = None
                for i, (submission, _) in enumerate(items):
                    found[i].append(self._failed(submission, ModerationStage.IMAGE_GUARD, exc, now))
            for i, verdict in enumerate(verdicts or []):
                record = guard_record(items[i][0], verdict, self.policy, ModerationSide.FAN, now)
                passed[i] = record is None
                if record is not None:
                    found[i].append(record)
        texts = [(i, submission.text) for i, (submission, _) in enumerate(items) if submission.text]
        if self.text_guard is not None and texts:
            try:
                verdicts = await asyncio.to_thread(self.text_guard.judge_prompts, [text for _, text in texts])
            except Exception as exc:  # noqa: BLE001
                log.warning("text guard failed on %d texts; holding them for review", len(texts), exc_info=True)
                verdicts = None
                for i, _ in texts:
                    found[i].append(self._failed(items[i][0], ModerationStage.TEXT_GUARD, exc, now))
            for (i, _), verdict in zip(texts, verdicts or []):
                record = guard_record(items[i][0], verdict, self.policy, ModerationSide.FAN, now)
                if record is not None:
                    found[i].append(record)
        for records in found:
            count(self.metrics, records)
        return [FanVerdicts(Judgement.of(records), ok) for records, ok in zip(found, passed)]

    async def judge_replies(self, pairs: list[tuple[Submission, str]]) -> list[list[ModerationRecord]]:
        """The text guard's verdicts on her replies (the fan's text as the user turn, hers as the assistant's).

        Nothing when no text guard is set. A guard that fails holds the replies for review.
        """
        if self.text_guard is None or not pairs:
            return [[] for _ in pairs]
        now = utcnow()
        try:
            verdicts = await asyncio.to_thread(
                self.text_guard.judge_responses, [(submission.text or "", text) for submission, text in pairs]
            )
        except Exception as exc:  # noqa: BLE001 - a guard that cannot judge holds what it was asked about
            log.warning("text guard failed on %d replies; holding them for review", len(pairs), exc_info=True)
            found = [[self._failed(submission, ModerationStage.TEXT_GUARD, exc, now, ModerationSide.REPLY)]
                     for submission, _ in pairs]
        else:
            found = []
            for (submission, _), verdict in zip(pairs, verdicts):
                record = guard_record(submission, verdict, self.policy, ModerationSide.REPLY, now)
                found.append([record] if record is not None else [])
        for records in found:
            count(self.metrics, records)
        return found

    def close(self) -> None:
        for guard in (self.text_guard, self.image_guard):
            if guard is not None:
                guard.runner.close()

    @staticmethod
    def _failed(submission: Submission, stage: ModerationStage, exc: Exception, now,
                side: ModerationSide = ModerationSide.FAN) -> ModerationRecord:
        return ModerationRecord(
            record_id=new_id(), item_id=submission.item_id, room=submission.room, user=submission.user,
            side=side, stage=stage, action=ModerationAction.REVIEW, categories=["guard_failed"],
            detail=f"{type(exc).__name__}: {exc}"[:1000], at=now,
        )
