"""The deep tier: escalated items answered by a Thinking model, within a deadline.

Per micro-batch of escalations from `items.deep`:
- an item older than its max age is shed; one already past its deadline (less the
  margin) gets its fast draft, marked `deep_deadline`; while the model is being
  switched every item gets its draft, marked `model_switching`;
- the rest go to the model in two steps when it thinks: the thought up to the thinking
  budget (stopping at ``</think>``), then the answer after it; a thought that ran over
  budget is closed for the model, which must then answer. Both steps are bounded by the
  time left before the deadline;
- the answer becomes a `deep` reply; its reasoning never reaches the overlay (it goes to
  the reasoning topic when `keep_reasoning` is on, else it is dropped). An answer that
  is empty, finished too late or fails the persona checks is replaced by the draft.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from consumers.batch_consumer import Outcome, Received
from consumers.fan_memory import remembered
from consumers.model_slot import ModelSlot, call_isolating_failures
from consumers.outputs import Outputs
from stream.contracts import Escalation, Reasoning, Timings, decode_escalation, utcnow
from stream.errors import ModelFailure, RejectedItem
from stream.fans.memory import FanMemory
from stream.images import admit_image, decode_base64_image
from stream.metrics import WorkerMetrics
from stream.models.runtime import GenerationOptions, GenerationRequest, ModelRunner
from stream.persona import Persona, build_messages, check_reply, fan_language, fit_bubble, read_reply
from stream.replies import build_reply, draft_reply, item_age_s
from stream.reasons import DegradeReason, ShedReason
from stream.settings import DeepTierSettings
from stream.thinking import THINK_CLOSE, continue_after_thought, split_thinking

log = logging.getLogger("idolstream.deep_tier")


def _held(escalation: Escalation) -> dict:
    """What `Outputs.reply` needs to hold the answer of an item held for review."""
    return {"held_by": tuple(escalation.held_by), "fan_text": escalation.item.text}

# Of the time left before the deadline, the share the thought may use; the answer gets the rest.
THOUGHT_SHARE = 0.7


@dataclass
class Job:
    received: Received
    escalation: Escalation
    request: GenerationRequest


@dataclass
class Answer:
    text: str
    reasoning: str
    closed_by_model: bool
    thought_tokens: int
    answer_tokens: int
    preprocess_s: float  # both passes'


class DeepTier:
    def __init__(
        self, settings: DeepTierSettings, slot: ModelSlot, persona: Persona, outputs: Outputs, metrics: WorkerMetrics,
        fan_memory: FanMemory | None = None,
    ) -> None:
        self.settings = settings
        self.fan_memory = fan_memory
        self.slot = slot
        self.persona = persona
        self.outputs = outputs
        self.metrics = metrics
        self.margin_s = settings.deadline_margin_ms / 1000

    def _time_left(self, escalation: Escalation) -> float:
        return (escalation.deadline_at - utcnow()).total_seconds() - self.margin_s

    async def handle(self, batch: list[Received]) -> list[Outcome]:
        started = time.monotonic()
        outcomes: list[Outcome] = []
        jobs: list[Job] = []
        runner = self.slot.runner
        for received in batch:
            record = received.record
            try:
                escalation = decode_escalation(record.value or b"")
            except RejectedItem as error:
                outcomes.append((record, [await self.outputs.dead_letter(record, error, None, None)]))
                continue
            item = escalation.item
            age_s = item_age_s(item)
            if age_s > self.settings.max_age_s:
                outcomes.append((record, [await self.outputs.shed(record, item, ShedReason.STALE, age_s)]))
            elif self._time_left(escalation) <= 0:
                outcomes.append((record, await self._draft(escalation, DegradeReason.DEEP_DEADLINE)))
            elif runner is None:
                outcomes.append((record, await self._draft(escalation, DegradeReason.MODEL_SWITCHING)))
            else:
                try:
                    jobs.append(await asyncio.to_thread(self._job, received, escalation, runner))
                except RejectedItem as error:  # the deep model's image budget refused what the fast one took
                    drafted = await self._draft(escalation, DegradeReason.MODEL_ERROR)
                    letter = await self.outputs.dead_letter(record, error, item.item_id, item.room)
                    outcomes.append((record, [*drafted, letter]))
        if jobs:
            answers, inference_s = await call_isolating_failures(
                lambda batch: self._think_and_answer(runner, batch), jobs, self.metrics
            )
            for job, answer in zip(jobs, answers):
                outcomes.append((job.received.record, await self._deliver(job, answer, runner, started, inference_s)))
        return outcomes

    def _job(self, received: Received, escalation: Escalation, runner: ModelRunner) -> Job:
        item = escalation.item
        limits = self.settings.image_limits(runner.spec.max_pixels)
        admitted = admit_image(decode_base64_image(item.image.data), limits)
        memory = remembered(self.fan_memory, item, self.persona, self.metrics)
        request = GenerationRequest(messages=build_messages(self.persona, item, "deep", None, memory),
                                    images=[admitted.image])
        return Job(received, escalation, request)

    def _think_and_answer(self, runner: ModelRunner, jobs: list[Job]) -> list[Answer]:
        """Blocking; runs in a worker thread. Every step is bounded by the earliest deadline."""
        t0 = time.monotonic()
        budget_s = min(self._time_left(job.escalation) for job in jobs)
        requests = [job.request for job in jobs]
        if runner.spec.mode != "thinking":
            results = runner.generate(requests, GenerationOptions(max_time_s=budget_s))
            return [Answer(r.text, "", True, 0, r.generated_tokens, r.preprocess_s) for r in results]
        thoughts = runner.generate(
            requests,
            GenerationOptions(
                max_new_tokens=self.settings.thinking_budget_tokens, stop=(THINK_CLOSE,),
                max_time_s=budget_s * THOUGHT_SHARE,
            ),
        )
        continued = [continue_after_thought(t.text) for t in thoughts]
        answers = runner.generate(
            [
                GenerationRequest(r.messages, r.images, assistant_prefix=prefix)
                for r, (prefix, _) in zip(requests, continued)
            ],
            GenerationOptions(max_time_s=max(0.001, budget_s - (time.monotonic() - t0))),
        )
        out = []
        for thought, (prefix, closed), answer in zip(thoughts, continued, answers):
            split = split_thinking(prefix + answer.text)
            out.append(Answer(split.answer, split.reasoning, closed, thought.generated_tokens, answer.generated_tokens,
                              thought.preprocess_s + answer.preprocess_s))
        return out

    async def _draft(self, escalation: Escalation, degraded: DegradeReason) -> list:
        if degraded is DegradeReason.DEEP_DEADLINE:
            self.metrics.deadline_misses.inc()
        return [await self.outputs.reply(draft_reply(escalation, degraded), **_held(escalation))]

    async def _deliver(self, job: Job, answer: Answer | ModelFailure, runner: ModelRunner, started: float,
                       inference_s: float) -> list:
        escalation, record = job.escalation, job.received.record
        item = escalation.item
        if isinstance(answer, ModelFailure):
            drafted = await self._draft(escalation, DegradeReason.MODEL_ERROR)
            return [*drafted, await self.outputs.dead_letter(record, answer, item.item_id, item.room)]
        self.metrics.generated_tokens.inc(answer.thought_tokens + answer.answer_tokens)
        self.metrics.thought_tokens.inc(answer.thought_tokens)
        if utcnow() >= escalation.deadline_at:
            return await self._draft(escalation, DegradeReason.DEEP_DEADLINE)
        language = fan_language(item.text, item.lang, self.persona.languages)
        read = read_reply(answer.text, self.persona, item.item_id, language)
        if read.used_fallback:
            return await self._draft(escalation, DegradeReason.EMPTY_ANSWER)
        text = read.text
        if self.settings.check_replies:
            # No second try here: the thought took most of the deadline. The draft was
            # checked by the fast tier (or is a persona line), so it goes out instead.
            misses = check_reply(text, self.persona, language)
            for miss in misses:
                self.metrics.reply_check_misses.labels("deep", miss).inc()
            if misses:
                log.info("deep reply to %s missed the persona checks (%s); sending the draft", item.item_id,
                         ", ".join(misses))
                return await self._draft(escalation, DegradeReason.PERSONA_CHECK)
        else:
            text = fit_bubble(text, self.persona)
        reply = build_reply(
            item,
            tier="deep",
            route_reason=escalation.reason,
            model_id=runner.spec.id,
            text=text,
            cue=read.cue,
            timings=Timings(
                item_created_at=item.created_at,
                queue_ms=max(0.0, (started - job.received.at) * 1000),
                admission_ms=escalation.fast_timings.admission_ms,
                preprocess_ms=escalation.fast_timings.preprocess_ms + answer.preprocess_s * 1000,
                inference_ms=escalation.fast_timings.inference_ms + max(0.0, inference_s - answer.preprocess_s) * 1000,
                replied_at=utcnow(),
            ),
            thumbnail=escalation.draft.thumbnail,
            persona_version=self.persona.version,
        )
        deliveries = [await self.outputs.reply(reply, **_held(escalation))]
        if self.settings.keep_reasoning:
            trace = Reasoning(
                item_id=item.item_id, reply_id=reply.reply_id, room=item.room, model_id=runner.spec.id,
                text=answer.reasoning[:100_000], thought_tokens=answer.thought_tokens,
                closed_by_model=answer.closed_by_model, at=utcnow(),
            )
            deliveries.append(await self.outputs.reasoning(trace))
        return deliveries
