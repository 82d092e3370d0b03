"""The draw tier: drawing requests from `items.draw` answered with a picture she drew.

Per request, one at a time (a picture is seconds of work; the inbox is bounded by the
settings' max pending, past which the partitions are paused):
- a record that is not a DrawRequest, or whose fan picture cannot be admitted, is
  dead-lettered with its reason;
- a request whose fan item is older than the settings' max age is not drawn late: the fan
  who was told "let me draw that" (`holding_sent`) gets her apology at once (`draw_deadline`),
  any other is shed (recorded on the shed topic for a later thank-you, as the other tiers
  shed stale items);
- a request already past its deadline gets her apology at once, marked `draw_deadline`;
  so does one arriving while the model is being switched (`draw_unavailable`);
- otherwise the pipeline draws, stopped at the earlier of the request's deadline and the
  registry entry's `deadline_ms`; a picture that came too late gets the apology
  (`draw_deadline`), a pipeline error the apology (`draw_failed`), and the tier goes on;
- a finished picture is encoded as a WebP data URL within the replies' limit and, when an
  image guard is set, judged; the verdict, when it is not "allow", goes to the moderation
  topic. A picture to block never reaches the overlay (the fan gets the apology); one to
  review is held for an operator with its picture (`replies.held`: shown if approved);
- the picture goes out as a `draw` reply with her short line about it, in the fan's language.

Exactly one answer per request, so the fan hears the apology once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from PIL import Image

from consumers.batch_consumer import Outcome, Received
from consumers.model_slot import ModelSlot
from consumers.outputs import Outputs
from stream.contracts import Cue, DrawRequest, ModerationRecord, Reply, Timings, decode_draw_request, new_id, utcnow
from stream.draw.runner import DrawFailed, DrawRunner, Drawing, encode_picture
from stream.errors import RejectedItem
from stream.images import admit_image, decode_base64_image, fit_to_budget, thumbnail_data_url
from stream.metrics import DrawMetrics
from stream.moderation.gate import guard_record
from stream.moderation.guard import GuardPolicy, ImageGuard
from stream.persona import Persona, fan_language
from stream.reasons import DegradeReason, ModerationAction, ModerationSide, ModerationStage, ShedReason
from stream.replies import build_reply, item_age_s
from stream.settings import DrawTierSettings

log = logging.getLogger("idolstream.draw_tier")

REVIEW_PICTURE_PX = 96  # the reviewer's thumbnail of the fan's picture when the overlay's are off

class DrawTier:
    def __init__(self, settings: DrawTierSettings, slot: ModelSlot, persona: Persona, outputs: Outputs,
                 metrics: DrawMetrics, image_guard: ImageGuard | None = None,
                 guard_policy: GuardPolicy | None = None) -> None:
        self.settings = settings
        self.slot = slot  # its runner is a DrawRunner; None while switching model
        self.persona = persona
        self.outputs = outputs
        self.metrics = metrics
        self.image_guard = image_guard
        self.guard_policy = guard_policy or GuardPolicy(
            controversial=settings.guard_controversial, unparseable=settings.guard_unparseable
        )

    async def handle(self, batch: list[Received]) -> list[Outcome]:
        return [(received.record, await self._one(received)) for received in batch]

    async def _one(self, received: Received) -> list:
        record = received.record
        try:
            request = decode_draw_request(record.value or b"")
        except RejectedItem as error:
            return [await self.outputs.dead_letter(record, error, None, None)]
        item = request.item
        age_s = item_age_s(item)
        if age_s > self.settings.max_age_s:  # live means fresh: not drawn late
            if request.holding_sent:  # she promised a picture: she says sorry rather than nothing
                return [await self._apology(request, DegradeReason.DRAW_DEADLINE, "late", received)]
            return [await self.outputs.shed(record, item, ShedReason.STALE, age_s)]  # kept for a thank-you
        if self._seconds_left(request) <= 0:
            return [await self._apology(request, DegradeReason.DRAW_DEADLINE, "late", received)]
        runner: DrawRunner | None = self.slot.runner
        if runner is None:  # switching model: no picture now, and no waiting for one
            return [await self._apology(request, DegradeReason.DRAW_UNAVAILABLE, "failed", received)]
        admitted = time.monotonic()
        try:
            picture = None
            if request.mode != "text_to_image":
                spec = runner.spec.draw
                limits = self.settings.image_limits(4 * spec.width * spec.height)
                picture = (await asyncio.to_thread(admit_image, decode_base64_image(item.image.data), limits)).image
        except RejectedItem as error:  # her picture cannot be drawn from: say sorry, and keep the why
            sorry = await self._apology(request, DegradeReason.DRAW_FAILED, "failed", received)
            return [sorry, await self.outputs.dead_letter(record, error, item.item_id, item.room)]
        admission_s = time.monotonic() - admitted
        # The pipeline stops at the earlier of the fan's deadline and the entry's own.
        budget_s = min(self._seconds_left(request), runner.spec.draw.deadline_ms / 1000)
        try:
            drawing = await asyncio.to_thread(runner.draw, request, picture, time.monotonic() + budget_s)
        except DrawFailed as error:
            log.warning("draw request %s (%s) failed: %s", request.request_id, request.mode, error)
            return [await self._apology(request, DegradeReason.DRAW_FAILED, "failed", received)]
        self._count(request, drawing)
        if drawing.interrupted or self._seconds_left(request) <= 0:
            log.info("draw request %s late after %d of %d steps (%.1f s)", request.request_id, drawing.steps_done,
                     drawing.steps_planned, drawing.seconds)
            return [await self._apology(request, DegradeReason.DRAW_DEADLINE, "late", received)]
        try:
            url = await asyncio.to_thread(encode_picture, drawing.image, self.settings.draw_picture_max_chars)
        except ValueError as error:
            log.warning("draw request %s: %s", request.request_id, error)
            return [await self._apology(request, DegradeReason.DRAW_FAILED, "failed", received)]
        verdict = await self._judge(request, drawing)
        if verdict is not None and verdict.action == ModerationAction.BLOCK:
            sends = [await self.outputs.moderation(verdict)]
            return [*sends, await self._apology(request, DegradeReason.MODERATION_BLOCKED, "flagged", received)]
        line = self.persona.draw_line("drawn", request.request_id, self._language(request))
        reply = self._reply(request, line, "happy", None, received, admission_s * 1000, drawing.seconds * 1000)
        reply = Reply.model_validate({**reply.model_dump(), "picture": url})
        if verdict is None:
            self.metrics.pictures.labels(request.mode, "drawn").inc()
            return [await self.outputs.reply(reply)]
        # To review: the reply, her picture in it, waits for an operator; approved, it is shown as it is.
        self.metrics.pictures.labels(request.mode, "flagged").inc()
        verdict = verdict.model_copy(update={"reply_id": reply.reply_id})
        sends = [await self.outputs.moderation(verdict)]
        held = await self.outputs.reply(reply, held_by=(verdict,), fan_text=item.text,
                                        picture=await asyncio.to_thread(self._fan_thumbnail, request, picture))
        return [*sends, held]

    def _seconds_left(self, request: DrawRequest) -> float:
        return (request.deadline_at - utcnow()).total_seconds()

    def _count(self, request: DrawRequest, drawing: Drawing) -> None:
        self.metrics.draw_seconds.labels(request.mode).observe(drawing.seconds)
        self.metrics.inference_seconds.observe(drawing.seconds)
        self.metrics.draw_steps.inc(drawing.steps_done)
        if drawing.seconds > 0 and drawing.steps_done:
            self.metrics.draw_steps_per_second.labels(request.mode).set(drawing.steps_done / drawing.seconds)

    async def _judge(self, request: DrawRequest, drawing: Drawing) -> ModerationRecord | None:
        """The image guard's verdict on her picture when it blocks or holds it (None: allowed, or no guard set)."""
        if self.image_guard is None:
            return None
        item = request.item
        # Within the guard's image budget, as fans' pictures are (a 1024x1024 picture is over most).
        budget = self.image_guard.runner.spec.max_pixels
        picture = drawing.image
        if budget is not None and picture.width * picture.height > budget:
            picture = picture.resize(fit_to_budget(picture.width, picture.height, budget, 32), Image.Resampling.LANCZOS)
        try:
            verdict = (await asyncio.to_thread(self.image_guard.judge, [picture]))[0]
        except Exception as exc:  # noqa: BLE001 - a guard that cannot judge must not let a picture through
            log.warning("image guard failed on draw request %s; the picture is not shown", request.request_id,
                        exc_info=True)
            record = ModerationRecord(
                record_id=new_id(), item_id=item.item_id, room=item.room, user=item.user, side=ModerationSide.REPLY,
                stage=ModerationStage.IMAGE_GUARD, action=ModerationAction.BLOCK, categories=["guard_failed"],
                detail=f"{type(exc).__name__}: {exc}"[:1000], at=utcnow(),
            )
        else:
            record = guard_record(item, verdict, self.guard_policy, ModerationSide.REPLY, utcnow())
        return record  # counted when it is produced to the moderation topic

    def _fan_thumbnail(self, request: DrawRequest, picture: Image.Image | None) -> str | None:
        """A small JPEG of what the fan sent, for the reviewer of a held picture (None if it cannot be read)."""
        side = self.settings.reply_thumbnail_px or REVIEW_PICTURE_PX
        if picture is None:  # drawn from words alone: the fan's picture was not admitted yet
            try:
                limits = self.settings.image_limits(side * side * 4)
                picture = admit_image(decode_base64_image(request.item.image.data), limits).image
            except RejectedItem:
                return None
        return thumbnail_data_url(picture.convert("RGB"), side)

    def _language(self, request: DrawRequest) -> str:
        item = request.item
        language = request.language or fan_language(item.text, item.lang, self.persona.languages)
        return self.persona.reply_language(language) or self.persona.default_language

    def _reply(self, request: DrawRequest, text: str, emotion: str, degraded: DegradeReason | None,
               received: Received, admission_ms: float = 0.0, inference_ms: float = 0.0) -> Reply:
        item = request.item
        return build_reply(
            item,
            tier="draw",
            route_reason=request.reason,
            model_id=self.slot.model_id,
            text=text,
            cue=Cue(emotion=emotion, motion=self.persona.motion_for(emotion)),
            timings=Timings(
                item_created_at=item.created_at,
                queue_ms=max(0.0, (time.monotonic() - received.at) * 1000 - admission_ms - inference_ms),
                admission_ms=request.fast_timings.admission_ms + admission_ms,
                preprocess_ms=request.fast_timings.preprocess_ms,
                inference_ms=request.fast_timings.inference_ms + inference_ms,
                replied_at=utcnow(),
            ),
            degraded=degraded,
            persona_version=self.persona.version,
        )

    async def _apology(self, request: DrawRequest, why: DegradeReason, outcome: str, received: Received):
        self.metrics.pictures.labels(request.mode, outcome).inc()
        text = self.persona.draw_line("draw_sorry", request.request_id, self._language(request))
        return await self.outputs.reply(self._reply(request, text, "sad", why, received))

