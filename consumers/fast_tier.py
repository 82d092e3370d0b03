"""The fast tier: fan items answered by the fast model, complex ones escalated to the deep tier.

Per micro-batch (the consuming loops live in `BatchConsumer`):
1. decode and admit each item (bad input: dead letter with its reason);
2. shed what must not be answered (stale, flooding fan, paced room, repeated item id);
3. run the fast model (a failing batch is retried item by item; an item that still
   fails gets a persona line and a dead letter; while the model is being switched every
   item gets a persona line);
4. check each answer against the persona (bubble, language, topics, markup); a miss is
   asked of the model once more, with a hint, when the item is still on time, and a
   second miss (or no time) sends a persona line instead;
5. route each answer: out at once, or to `items.deep` with its draft and reason (plus a
   holding line on the overlay when the policy says so), unless the deep tier's circuit
   is open or too many escalations are waiting, in which case the fast answer goes out;
   a drawing request (the fan's words, or the model's [draw]) goes to `items.draw` with
   the image prompt (her style, what the fan asked, the model's idea for the picture) and
   her "let me draw that" line goes to the overlay at once, unless drawing is off, its
   circuit open or too many drawings are waiting: then she says sorry at once.

`watch_escalations` reads the replies topic: a deep answer settles its escalation (and
closes the breaker), and an escalation whose deadline passes unanswered gets its draft
sent by the fast tier itself (and counts against the breaker). Drawing requests are
watched the same way, with their own breaker: the draw tier answers each one itself, with
her picture or her apology; one still unanswered a grace period past its deadline (the
draw tier is down) gets her apology from the fast tier.

`recover_escalations` makes that survive a crash. Whenever this worker is given partitions,
it reads `items.deep`, `items.draw` and `replies` back (the last max age plus deadline) and
takes over the escalations and drawing requests of those partitions' items that have no
answer yet; on revocation it
forgets them (their new owner does the same). Why rebuild from Kafka rather than hold each
escalated item's offset until it is settled: holding would stall the commits of every later
item of the partition for up to the deadline and make a restarted worker run all of them
through the model again (each with another holding line), and an item redone past its max
age would be shed instead of answered. The escalation record already carries the draft and
the deadline, which is all the item's one answer needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.batch_consumer import Outcome, Received
from consumers.fan_memory import remembered
from consumers.model_slot import ModelSlot, call_isolating_failures
from consumers.moderation import FanModeration
from consumers.outputs import Outputs, source_of
from stream.breaker import CircuitBreaker
from stream.contracts import (
    Cue, Draft, DrawRequest, Escalation, ModerationRecord, Submission, Timings, decode_draw_request,
    decode_escalation, decode_submission, new_id, utcnow,
)
from stream.draw.routing import draw_mode, draw_prompt
from stream.errors import ModelFailure, RejectedItem
from stream.escalations import PendingEscalations, still_owed
from stream.fans.memory import FanMemory
from stream.flow import RecentIds
from stream.kafka_io import UndecodableRange, read_skipping_undecodable
from stream.images import admit_image, decode_base64_image, thumbnail_data_url
from stream.metrics import WorkerMetrics
from stream.moderation.gate import ALLOW, Judgement
from stream.models.runtime import GenerationRequest, ModelRunner
from stream.persona import (
    Persona, ReadReply, ReplyMiss, build_messages, check_reply, fan_language, fit_bubble, read_reply, retry_hint,
)
from stream.replies import build_reply, draft_reply, item_age_s
from stream.reasons import DegradeReason, ModerationAction
from stream.routing import ItemFeatures, RouteDecision, RoutingPolicy, decide_route, item_features, item_priority
from stream.settings import FastTierSettings
from stream.shedding import Arrival, LoadShedder, SheddingPolicy

log = logging.getLogger("idolstream.fast_tier")
PERSONA_MODEL_ID = "persona"  # model_id of lines no model wrote
WATCH_PERIOD_S = 0.05
REVIEW_PICTURE_PX = 96  # the reviewer's thumbnail when the overlay's are off
RECOVERY_RETRY_S = 1.0
ANSWERED_IDS = 8192  # answers seen on the replies topic, remembered so a recovery skips them

# Reads the records of a topic written in the last N seconds (stream.kafka_io.read_recent, bound).
RecentReader = Callable[[str, float], Awaitable[list]]


@dataclass
class Prepared:
    received: Received
    submission: Submission
    request: GenerationRequest
    features: ItemFeatures
    admission_ms: float
    thumbnail: str | None  # shown beside the reply on the overlay (only once moderation lets it)
    language: str | None  # the fan's, when they wrote something
    picture: str | None = None  # the same small JPEG, for a reviewer when the item is held
    judgement: Judgement = ALLOW  # moderation's, on what the fan sent
    memory: str | None = None  # what she remembers of the fan, in her prompt


@dataclass
class Answer:
    """A model result read for the overlay, and what the persona checks found wrong with it."""

    result: object  # GenerationResult, or ModelFailure
    read: ReadReply | None  # None for a failure
    misses: list[ReplyMiss]
    guarded: list[ModerationRecord] = field(default_factory=list)  # the text guard's, on this answer


def routing_policy(settings: FastTierSettings) -> RoutingPolicy:
    return RoutingPolicy(
        escalate=settings.escalate,
        long_text_chars=settings.long_text_chars,
        question_min_chars=settings.question_min_chars,
        dense_text_coverage=settings.dense_text_coverage,
        trust_model_verdict=settings.trust_model_verdict,
        draw=settings.draw,
    )


def shedding_policy(settings: FastTierSettings) -> SheddingPolicy:
    return SheddingPolicy(
        max_age_s=settings.max_age_s,
        user_max_items=settings.user_max_items,
        user_window_s=settings.user_window_s,
        room_max_replies=settings.room_max_replies,
        room_window_s=settings.room_window_s,
    )


class FastTier:
    def __init__(
        self,
        settings: FastTierSettings,
        slot: ModelSlot,
        persona: Persona,
        outputs: Outputs,
        metrics: WorkerMetrics,
        replies_reader: AIOKafkaConsumer,
        read_recent: RecentReader,
        moderation: FanModeration,
        fan_memory: FanMemory | None = None,
    ) -> None:
        self.settings = settings
        self.fan_memory = fan_memory
        self.slot = slot
        self.persona = persona
        self.outputs = outputs
        self.metrics = metrics
        self.replies_reader = replies_reader
        self.read_recent = read_recent
        self.moderation = moderation
        self.answered = RecentIds(ANSWERED_IDS)
        self._to_recover: asyncio.Queue[set[TopicPartition]] = asyncio.Queue()
        self.policy = routing_policy(settings)
        self.shedder = LoadShedder(shedding_policy(settings))
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)
        self.pending: PendingEscalations[Escalation] = PendingEscalations(settings.max_pending_escalations)
        # Drawing requests waiting for the draw tier's answer, with a breaker of their own.
        self.draw_breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)
        self.pending_draws: PendingEscalations[DrawRequest] = PendingEscalations(settings.max_pending_draws)

    # -- one batch --------------------------------------------------------------------

    async def handle(self, batch: list[Received]) -> list[Outcome]:
        started = time.monotonic()
        prepared, rejected = await asyncio.to_thread(self._prepare, batch)
        outcomes: list[Outcome] = []
        for received, error, sub in rejected:
            letter = await self.outputs.dead_letter(received.record, error, sub and sub.item_id, sub and sub.room)
            outcomes.append((received.record, [letter]))
        # The word filter runs before shedding: a blocked fan is never answered, nor thanked
        # by name for an item that was shed.
        kept = []
        for item in prepared:
            item.judgement = self.moderation.words(item.submission)
            if item.judgement.action == ModerationAction.BLOCK:
                outcomes.append((item.received.record, await self._blocked(item.judgement)))
            else:
                kept.append(item)
        prepared = kept
        wall = utcnow()
        arrivals = [
            Arrival(p.submission.item_id, p.submission.room, p.submission.user.id, item_age_s(p.submission, wall),
                    item_priority(p.features))
            for p in prepared
        ]
        to_answer = []
        for item, arrival, verdict in zip(prepared, arrivals, self.shedder.triage(arrivals, started)):
            if verdict is None:
                to_answer.append(item)
            else:
                shed = await self.outputs.shed(item.received.record, item.submission, verdict, arrival.age_s)
                outcomes.append((item.received.record, [shed]))
        to_answer = await self._guarded(to_answer, outcomes)
        if to_answer:
            runner = self.slot.runner
            if runner is None:
                for item in to_answer:
                    outcomes.append((item.received.record, await self._persona_line(item, DegradeReason.MODEL_SWITCHING)))
            else:
                answers, inference_s = await self._answers(to_answer, runner)
                for item, answer in zip(to_answer, answers):
                    outcomes.append((item.received.record, await self._route(item, answer, runner, started, inference_s)))
        return outcomes

    async def _guarded(self, items: list[Prepared], outcomes: list[Outcome]) -> list[Prepared]:
        """The guards' verdicts on the items to answer: blocked ones are recorded, not answered.

        A fan's thumbnail goes to the overlay only when an image guard passed the picture,
        or the operator turned thumbnails on without one.
        """
        if not items:
            return items
        verdicts = await self.moderation.guards([(p.submission, p.request.images[0]) for p in items])
        kept = []
        for item, verdict in zip(items, verdicts):
            item.judgement = item.judgement.joined(list(verdict.judgement.records))
            shown = verdict.image_passed or self.settings.thumbnails_without_image_guard
            item.thumbnail = item.picture if shown and self.settings.reply_thumbnail_px else None
            if item.judgement.action == ModerationAction.BLOCK:
                outcomes.append((item.received.record, await self._blocked(verdict.judgement, counted=True)))
            else:
                kept.append(item)
        return kept

    async def _blocked(self, judgement: Judgement, counted: bool = True) -> list:
        return [await self.outputs.moderation(record, counted=counted) for record in judgement.records]

    def _held(self, item: Prepared) -> dict:
        """What `Outputs.reply` needs to hold an item's replies for review."""
        held = item.judgement.records if item.judgement.action == ModerationAction.REVIEW else ()
        return {"held_by": held, "fan_text": item.submission.text, "picture": item.picture}

    async def _answers(self, items: list[Prepared], runner: ModelRunner) -> tuple[list[Answer], float]:
        """The model's answers, each read and checked; misses regenerated once while the item is on time."""
        results, inference_s = await call_isolating_failures(
            lambda batch: runner.generate([p.request for p in batch]), items, self.metrics
        )
        answers = [self._read(item, result) for item, result in zip(items, results)]
        missed = [i for i, answer in enumerate(answers) if answer.misses]
        now = time.monotonic()
        budget_s = self.settings.regenerate_within_ms / 1000
        # The retry takes about as long as the first call did: only items still on time after it.
        again = [i for i in missed if now - items[i].received.at + inference_s <= budget_s]
        if again:
            self.metrics.regenerations.labels("fast").inc(len(again))
            retries = [self._retry_request(items[i], answers[i].misses) for i in again]
            results, retry_s = await call_isolating_failures(
                lambda batch: runner.generate(batch), retries, self.metrics
            )
            inference_s += retry_s
            for i, result in zip(again, results):
                answers[i] = self._read(items[i], result)
        # The text guard judges the answers that will go out as the model wrote them.
        judged = [i for i, a in enumerate(answers) if a.read is not None and not a.read.used_fallback and not a.misses]
        verdicts = await self.moderation.judge_replies([(items[i].submission, answers[i].read.text) for i in judged])
        for i, records in zip(judged, verdicts):
            answers[i].guarded = records
        return answers, inference_s

    def _read(self, item: Prepared, result) -> Answer:
        if isinstance(result, ModelFailure):
            return Answer(result, None, [])
        read = read_reply(result.text, self.persona, item.submission.item_id, item.language)
        if not self.settings.check_replies or read.used_fallback:
            return Answer(result, replace(read, text=fit_bubble(read.text, self.persona)), [])
        misses = check_reply(read.text, self.persona, item.language)
        for miss in misses:
            self.metrics.reply_check_misses.labels("fast", miss).inc()
        if misses:
            log.info("reply to %s missed the persona checks (%s): %r", item.submission.item_id,
                     ", ".join(misses), read.text[:120])
        return Answer(result, read, misses)

    def _retry_request(self, item: Prepared, misses: list[ReplyMiss]) -> GenerationRequest:
        hint = retry_hint(misses, self.persona, item.language)
        messages = build_messages(self.persona, item.submission, "fast", hint, item.memory)
        return GenerationRequest(messages=messages, images=item.request.images)

    def _prepare(self, batch: list[Received]) -> tuple[list[Prepared], list[tuple[Received, RejectedItem, Submission | None]]]:
        limits = self.settings.image_limits(self.slot.spec.max_pixels)
        prepared, rejected = [], []
        for received in batch:
            submission = None
            t0 = time.perf_counter()
            try:
                submission = decode_submission(received.record.value or b"", max_clock_skew_s=self.settings.max_clock_skew_s)
                # Only a screenshot's text coverage feeds the routing policy: measure it there alone.
                admitted = admit_image(
                    decode_base64_image(submission.image.data), limits,
                    measure_text_coverage=submission.kind == "danmaku_screenshot",
                )
            except RejectedItem as error:
                rejected.append((received, error, submission))
                continue
            memory = remembered(self.fan_memory, submission, self.persona, self.metrics)
            request = GenerationRequest(
                messages=build_messages(self.persona, submission, "fast", None, memory), images=[admitted.image]
            )
            features = item_features(submission, admitted.text_coverage)
            picture = thumbnail_data_url(admitted.image, self.settings.reply_thumbnail_px or REVIEW_PICTURE_PX)
            language = fan_language(submission.text, submission.lang, self.persona.languages)
            prepared.append(Prepared(
                received, submission, request, features, (time.perf_counter() - t0) * 1000, None, language, picture,
                memory=memory,
            ))
        return prepared, rejected

    def _timings(self, item: Prepared, started: float, inference_s: float, preprocess_s: float = 0.0) -> Timings:
        return Timings(
            item_created_at=item.submission.created_at,
            queue_ms=max(0.0, (started - item.received.at) * 1000),
            admission_ms=item.admission_ms,
            preprocess_ms=preprocess_s * 1000,
            inference_ms=max(0.0, inference_s - preprocess_s) * 1000,
            replied_at=utcnow(),
        )

    async def _persona_line(self, item: Prepared, degraded: DegradeReason, model_id: str = PERSONA_MODEL_ID) -> list:
        sub = item.submission
        reply = build_reply(
            sub,
            tier="fallback",
            route_reason=decide_route(item.features, False, self.policy).reason,
            degraded=degraded,
            model_id=model_id,
            text=self.persona.fallback_line(sub.item_id, item.language),
            cue=Cue(emotion="happy", motion=self.persona.motion_for("happy")),
            timings=self._timings(item, time.monotonic(), 0.0),
            thumbnail=item.thumbnail,
            persona_version=self.persona.version,
        )
        return [await self.outputs.reply(reply, **self._held(item))]

    async def _route(self, item: Prepared, answer: Answer, runner: ModelRunner, started: float,
                     inference_s: float) -> list:
        sub, result, read = item.submission, answer.result, answer.read
        if isinstance(result, ModelFailure):
            line = await self._persona_line(item, DegradeReason.MODEL_ERROR, runner.spec.id)
            return [*line, await self.outputs.dead_letter(item.received.record, result, sub.item_id, sub.room)]
        self.metrics.generated_tokens.inc(result.generated_tokens)
        assert read is not None
        degraded = DegradeReason.EMPTY_ANSWER if read.used_fallback else None
        if answer.misses:  # still, after a regeneration or without time for one
            read = replace(read, text=self.persona.fallback_line(sub.item_id, item.language), used_fallback=True)
            degraded = DegradeReason.PERSONA_CHECK
        recorded = [await self.outputs.moderation(record, counted=True) for record in answer.guarded]
        if any(record.action == ModerationAction.BLOCK for record in answer.guarded):
            read = replace(read, text=self.persona.fallback_line(sub.item_id, item.language), used_fallback=True)
            degraded = DegradeReason.MODERATION_BLOCKED
        elif answer.guarded:  # to review: this item's replies wait for an operator
            item.judgement = item.judgement.joined(answer.guarded)
        decision = decide_route(item.features, read.wants_deep, self.policy, read.wants_draw)
        tier = "fallback" if read.used_fallback else "fast"
        timings = self._timings(item, started, inference_s, result.preprocess_s)
        if decision.route == "draw":
            # Her idea for the picture is the model's answer, when it went out as written.
            idea = None if read.used_fallback else read.text
            return [*recorded, *await self._draw(item, decision, idea, runner.spec.id, timings)]
        if decision.route == "deep":
            now = time.monotonic()
            if self.pending.full():
                degraded = DegradeReason.ESCALATION_BACKLOG
            elif not self.breaker.allow(now):
                degraded = DegradeReason.DEEP_UNAVAILABLE
            else:
                draft = Draft(text=read.text, cue=read.cue, tier=tier, model_id=runner.spec.id,
                              thumbnail=item.thumbnail, persona_version=self.persona.version)
                return [*recorded, *await self._escalate(item, decision.reason, decision.hold, draft, timings, now)]
        reply = build_reply(
            sub, tier=tier, route_reason=decision.reason, degraded=degraded, model_id=runner.spec.id,
            text=read.text, cue=read.cue, timings=timings, thumbnail=item.thumbnail,
            persona_version=self.persona.version,
        )
        return [*recorded, await self.outputs.reply(reply, **self._held(item))]

    async def _draw(self, item: Prepared, decision: RouteDecision, idea: str | None, model_id: str,
                    timings: Timings) -> list:
        """Hand a drawing request to the draw tier, her "let me draw that" line to the overlay at once.

        No drawing when the item is held for review (a picture drawn for a fan an operator has
        not cleared), the draw circuit is open or too many drawings wait: she says sorry at once.
        """
        sub = item.submission
        now = time.monotonic()
        held = item.judgement.action == ModerationAction.REVIEW
        if held or self.pending_draws.full() or not self.draw_breaker.allow(now):
            reply = self._draw_sorry(sub, decision.reason, DegradeReason.DRAW_UNAVAILABLE, item.language, timings,
                                     item.thumbnail)
            return [await self.outputs.reply(reply, **self._held(item))]
        ask = item.features.draw_ask
        deadline_s = self.settings.draw_deadline_ms / 1000
        request = DrawRequest(
            request_id=new_id(),
            item=sub,
            prompt=draw_prompt(ask, self.persona.name, item.language, idea),
            mode=draw_mode(ask if ask is not None else sub.text, True, sub.kind),
            reason=decision.reason,
            language=item.language,
            requested_at=timings.replied_at,
            deadline_at=timings.replied_at + timedelta(seconds=deadline_s),
            holding_sent=True,
            fast_timings=timings,
            source=source_of(item.received.record),
        )
        holding = build_reply(
            sub, role="holding", tier="fast", route_reason=decision.reason, model_id=model_id,
            text=self.persona.draw_line("drawing", sub.item_id, item.language),
            cue=Cue(emotion="excited", motion=self.persona.motion_for("excited")), timings=timings,
            thumbnail=item.thumbnail, persona_version=self.persona.version,
        )
        deliveries = [await self.outputs.reply(holding, **self._held(item)), await self.outputs.draw(request)]
        self.pending_draws.add(sub.item_id, now + deadline_s + self.settings.draw_grace_ms / 1000, request)
        self.metrics.pending_draws.set(len(self.pending_draws))
        return deliveries

    async def _escalate(self, item: Prepared, reason, hold: bool, draft: Draft, timings: Timings, now: float) -> list:
        sub = item.submission
        deliveries = []
        if hold:
            holding = build_reply(
                sub, role="holding", tier="fast", route_reason=reason, model_id=draft.model_id,
                text=self.persona.holding_line(sub.item_id, item.language),
                cue=Cue(emotion="thinking", motion=self.persona.motion_for("thinking")), timings=timings,
                thumbnail=item.thumbnail, persona_version=self.persona.version,
            )
            deliveries.append(await self.outputs.reply(holding, **self._held(item)))
        deadline_s = self.settings.deep_deadline_ms / 1000
        escalation = Escalation(
            escalation_id=new_id(),
            item=sub,
            draft=draft,
            reason=reason,
            escalated_at=timings.replied_at,
            deadline_at=timings.replied_at + timedelta(seconds=deadline_s),
            holding_sent=hold,
            fast_timings=timings,
            source=source_of(item.received.record),
            held_by=list(self._held(item)["held_by"]),
        )
        deliveries.append(await self.outputs.escalate(escalation))
        self.pending.add(sub.item_id, now + deadline_s, escalation)
        self.metrics.pending_escalations.set(len(self.pending))
        return deliveries

    # -- escalations in flight --------------------------------------------------------

    async def watch_escalations(self) -> None:
        """Settle escalations from the replies topic; send the draft for those past their deadline."""
        while True:
            batches = await read_skipping_undecodable(
                self.replies_reader, timeout_ms=int(WATCH_PERIOD_S * 1000), max_records=500
            )
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    if isinstance(record, UndecodableRange):
                        log.warning("skipped undecodable replies at %s: %s", record, record.error)
                        continue
                    self._settle(record.value, now)
            for waiting in self.pending.expired(now):
                self.breaker.record_failure(now)
                log.info("deep answer for %s missed its deadline; sending the draft", waiting.item_id)
                await self.outputs.reply(draft_reply(waiting.draft, DegradeReason.DEEP_DEADLINE),
                                         held_by=tuple(waiting.draft.held_by), fan_text=waiting.draft.item.text)
            for waiting in self.pending_draws.expired(now):
                self.draw_breaker.record_failure(now)
                log.info("no picture nor apology from the draw tier for %s in time; saying sorry", waiting.item_id)
                request = waiting.draft
                await self.outputs.reply(self._draw_sorry(
                    request.item, request.reason, DegradeReason.DRAW_DEADLINE, request.language,
                    request.fast_timings.model_copy(update={"replied_at": utcnow()}),
                ))
            self.metrics.pending_escalations.set(len(self.pending))
            self.metrics.breaker_open.set(0 if self.breaker.state(now) == "closed" else 1)
            self.metrics.pending_draws.set(len(self.pending_draws))
            self.metrics.draw_breaker_open.set(0 if self.draw_breaker.state(now) == "closed" else 1)

    def _draw_sorry(self, sub: Submission, reason, degraded: DegradeReason, language: str | None,
                    timings: Timings, thumbnail: str | None = None):
        """Her apology, in the fan's language, for a drawing she will not show."""
        return build_reply(
            sub, tier="fallback", route_reason=reason, degraded=degraded, model_id=PERSONA_MODEL_ID,
            text=self.persona.draw_line("draw_sorry", sub.item_id, language),
            cue=Cue(emotion="sad", motion=self.persona.motion_for("sad")), timings=timings, thumbnail=thumbnail,
            persona_version=self.persona.version,
        )

    def _settle(self, raw: bytes | None, now: float) -> None:
        try:
            reply = orjson.loads(raw or b"")
            if reply.get("role") != "answer":
                return
            self.answered.add(reply["item_id"])
            settled = self.pending.settle(reply["item_id"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return  # not a reply; the gateway counts those
        drawn = self.pending_draws.settle(reply["item_id"])
        if drawn is not None:
            # Her picture, or a verdict on it, is the draw tier working; an apology for lateness
            # or a failure is not.
            if reply.get("tier") == "draw" and reply.get("degraded") in (None, DegradeReason.MODERATION_BLOCKED):
                self.draw_breaker.record_success(now)
            else:
                self.draw_breaker.record_failure(now)
        if settled is None:
            return
        if reply.get("tier") == "deep":
            self.breaker.record_success(now)
        else:
            self.breaker.record_failure(now)  # the deep tier sent the draft itself: late or degraded

    # -- escalations of a crashed or revoked worker -------------------------------------

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self._to_recover.put_nowait(assigned)

    def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        def revoked_source(waiting) -> bool:
            return TopicPartition(waiting.source.topic, waiting.source.partition) in revoked

        dropped = self.pending.drop(revoked_source) + self.pending_draws.drop(revoked_source)
        if dropped:
            log.info("%d escalations handed over with their partitions", dropped)
        self.metrics.pending_escalations.set(len(self.pending))

    async def recover_escalations(self) -> None:
        """Take over the unanswered escalations of each set of partitions this worker is given."""
        while True:
            assigned = await self._to_recover.get()
            while True:
                try:
                    recovered = await self._recover(assigned)
                    break
                except Exception:  # the broker may be down too: keep trying, the items are on Kafka
                    log.warning("reading back escalations failed; retrying in %.0f s", RECOVERY_RETRY_S,
                                exc_info=True)
                    await asyncio.sleep(RECOVERY_RETRY_S)  # a retry period, not a readiness guess
            if recovered:
                log.info("took over %d unanswered escalations of %d partitions", recovered, len(assigned))

    async def _recover(self, assigned: set[TopicPartition]) -> int:
        settings, topics = self.settings, self.settings.topics
        deep_window_s = settings.max_age_s + settings.deep_deadline_ms / 1000
        draw_window_s = settings.max_age_s + self._draw_wait_s()
        # What was handed on first, then the replies: an answer produced meanwhile is then among them.
        escalated = await self.read_recent(topics.items_deep, deep_window_s)
        drawn = await self.read_recent(topics.items_draw, draw_window_s)
        for record in await self.read_recent(topics.replies, max(deep_window_s, draw_window_s)):
            self._settle(record.value, time.monotonic())  # also feeds `answered`
        owned = {(tp.topic, tp.partition) for tp in assigned}
        recovered = self._take_over(escalated, decode_escalation, self.pending, 0.0, owned)
        recovered += self._take_over(drawn, decode_draw_request, self.pending_draws, settings.draw_grace_ms / 1000,
                                     owned)
        self.metrics.pending_escalations.set(len(self.pending))
        self.metrics.pending_draws.set(len(self.pending_draws))
        return recovered

    def _take_over(self, records: list, decode, pending: PendingEscalations, grace_s: float,
                   owned: set[tuple[str, int]]) -> int:
        """Wait again for the still-unanswered hand-offs (escalations or drawing requests) of `owned`
        partitions among `records`, each due at its deadline plus `grace_s`; how many were taken over."""
        handed = []
        for record in records:
            try:
                handed.append(decode(record.value or b""))
            except RejectedItem:
                continue  # the tier it was handed to dead-letters it
        now, wall = time.monotonic(), utcnow()
        taken = 0
        for waiting in still_owed(handed, self.answered, owned):
            item_id = waiting.item.item_id
            if item_id not in pending:
                pending.add(item_id, now + (waiting.deadline_at - wall).total_seconds() + grace_s, waiting)
                taken += 1
        return taken

    def _draw_wait_s(self) -> float:
        return (self.settings.draw_deadline_ms + self.settings.draw_grace_ms) / 1000
