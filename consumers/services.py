"""Wiring: build each service from its settings and parts, start it, stop it cleanly.

The services themselves (`FastTier`, `DeepTier`, `Gateway`) take their parts as
arguments; this module is the only place that constructs Kafka clients, models and the
admin HTTP for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition

from stream.fans.memory import FanMemory
from stream.kafka_io import bootstrap_for, ensure_topics, make_consumer, make_producer, partitions_of, read_recent
from stream.metrics import DrawMetrics, GatewayMetrics, WorkerMetrics
from stream.models.backends import load_runner
from stream.models.errors import ModelLoadError
from stream.models.registry import ModelRegistry, ModelSpec
from stream.models.runtime import ModelRunner
from stream.models.tiny import build_missing
from stream.moderation.gate import ReplyScreen
from stream.moderation.guard import GuardPolicy, ImageGuard, TextGuard
from stream.moderation.text_filter import TextFilter
from stream.persona import Persona
from stream.settings import (
    CommonSettings, ConsoleSettings, DeepTierSettings, DrawTierSettings, FastTierSettings, GatewaySettings,
    WorkerSettings,
)
from stream.switching import ModelSwitchGate
from stream.topics import topic_plan

from consumers.admin import admin_app, admin_server
from consumers.batch_consumer import BatchConsumer, BatchLimits
from consumers.deep_tier import DeepTier
from consumers.draw_tier import DrawTier
from consumers.fan_memory import FanMemoryReader
from consumers.fast_tier import FastTier
from consumers.gateway import Gateway
from consumers.model_slot import ModelSlot
from consumers.moderation import FanModeration
from consumers.outputs import Outputs

log = logging.getLogger("idolstream")
PROJECT_ROOT = Path.cwd()


async def prepare_topics(settings: CommonSettings, bootstrap: str) -> list[str]:
    return await ensure_topics(
        bootstrap, topic_plan(settings.topics, settings.topic_partitions), settings.topic_replicas
    )


class RegistryLoader:
    """Loads models by registry id, reading the registry file afresh for every load and switch.

    A model registered while the worker runs (``idolstream models finetune`` adds one) can
    then be switched to without a restart. A model loaded before is found by the entry it
    was loaded from even if the file has since lost it, so a failed switch can always go
    back. Relative sources resolve against the working directory, as everywhere.
    """

    def __init__(self, registry_path: Path) -> None:
        self.registry_path = Path(registry_path)
        self._loaded: dict[str, ModelSpec] = {}

    def registry(self) -> ModelRegistry:
        return ModelRegistry.load(self.registry_path)

    def known_ids(self) -> list[str]:
        return self.registry().ids()

    def __call__(self, model_id: str) -> ModelRunner:
        try:
            registry = self.registry()
            spec = registry.get(model_id) if model_id in registry or model_id not in self._loaded else None
        except ModelLoadError:
            if model_id not in self._loaded:
                raise
            spec = None
        if spec is None:  # going back to a model loaded before, whose entry is gone or unreadable now
            spec = self._loaded[model_id]
        local = spec.local_dir(PROJECT_ROOT) if spec.backend == "transformers" else None
        if spec.demo and local is not None and not (local / "config.json").exists():
            raise ModelLoadError(
                f"model {model_id!r} is trained here and has not been yet: run `idolstream models train-demo` "
                "(a few minutes on a CPU) or `make demo`"
            )
        runner = load_runner(spec, PROJECT_ROOT)
        self._loaded[model_id] = spec
        return runner


def model_loader(settings: WorkerSettings) -> RegistryLoader:
    """Load-by-registry-id for a worker (tiny checkpoints are built first when missing)."""
    loader = RegistryLoader(settings.registry_path)
    build_missing(loader.registry(), PROJECT_ROOT)
    return loader


async def load_slot(settings: WorkerSettings, model_id: str, metrics: WorkerMetrics) -> ModelSlot:
    loader = await asyncio.to_thread(model_loader, settings)
    runner = await asyncio.to_thread(loader, model_id)
    return ModelSlot(runner, loader, loader.known_ids, ModelSwitchGate(settings.min_switch_interval_s), metrics)


def load_fan_moderation(settings: FastTierSettings, metrics: WorkerMetrics,
                        text_filter: TextFilter | None = None) -> FanModeration:
    """The word filter from its list, and the guards the settings name, loaded by registry id (blocking)."""
    text_filter = text_filter or TextFilter.from_file(settings.moderation_words_path)
    loader = RegistryLoader(settings.registry_path)
    text_guard = TextGuard(loader(settings.text_guard_model_id)) if settings.text_guard_model_id else None
    image_guard = ImageGuard(loader(settings.image_guard_model_id)) if settings.image_guard_model_id else None
    policy = GuardPolicy(controversial=settings.guard_controversial, unparseable=settings.guard_unparseable)
    return FanModeration(text_filter, text_guard, image_guard, policy, metrics)


@dataclass
class RunningWorker:
    tier: FastTier | DeepTier | DrawTier
    consumer: BatchConsumer
    task: asyncio.Task
    admin_port: int | None


@contextlib.asynccontextmanager
async def _worker(
    tier, consumer, slot: ModelSlot, metrics: WorkerMetrics, settings: WorkerSettings, admin_port: int | None,
    side_tasks: list,
) -> AsyncIterator[RunningWorker]:
    """Run the consumer and its side loops; `task` ends (raising) as soon as any of them fails."""
    consuming = asyncio.create_task(consumer.run(), name="consume")
    extra = [asyncio.create_task(coro) for coro in side_tasks]

    async def supervise() -> None:
        done, _ = await asyncio.wait({consuming, *extra}, return_when=asyncio.FIRST_COMPLETED)
        for finished in done:
            finished.result()

    task = asyncio.create_task(supervise(), name="worker")
    async with contextlib.AsyncExitStack() as stack:
        port = None
        if admin_port is not None:
            app = admin_app(slot, metrics, running=lambda: not task.done())
            port = await stack.enter_async_context(admin_server(app, settings.admin_host, admin_port))
        try:
            yield RunningWorker(tier, consumer, task, port)
        finally:
            consumer.stop()
            await asyncio.gather(consuming, return_exceptions=True)
            for side in extra:
                side.cancel()
            await asyncio.gather(*extra, return_exceptions=True)
            await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def fast_tier_service(
    settings: FastTierSettings, bootstrap: str, slot: ModelSlot, metrics: WorkerMetrics,
    moderation: FanModeration | None = None,
) -> AsyncIterator[RunningWorker]:
    """A started fast tier running as a task; leaving the block stops it cleanly.

    `moderation` defaults to the word filter and guards the settings name (tests pass a
    guard whose verdicts they fix).
    """
    persona = Persona.load(settings.persona_path)
    text_filter = TextFilter.from_file(settings.moderation_words_path)
    screen = ReplyScreen(text_filter, persona)  # refuses a persona whose own lines the list stops
    owned = moderation is None
    if moderation is None:
        moderation = await asyncio.to_thread(load_fan_moderation, settings, metrics, text_filter)
    consumer = make_consumer(
        bootstrap, settings.group_id, "idolstream-fast", session_timeout_ms=settings.session_timeout_ms
    )
    # Escalations are settled by answers on the replies topic, read from now on.
    replies = make_consumer(bootstrap, None, "idolstream-fast-watch", auto_offset_reset="latest")
    producer = make_producer(bootstrap, "idolstream-fast")
    await producer.start()
    await consumer.start()
    await replies.start()
    stack = contextlib.AsyncExitStack()
    try:
        await _seek_to_end(replies, bootstrap, settings.topics.replies)
        outputs = Outputs(producer, settings.topics, metrics, settings.dlq_max_original_bytes, screen)
        tier = FastTier(settings, slot, persona, outputs, metrics, replies,
                        lambda topic, since_s: read_recent(bootstrap, topic, since_s, "idolstream-fast-recovery"),
                        moderation, await stack.enter_async_context(fan_memory(settings, bootstrap, "fast")))
        limits = BatchLimits(settings.batch_max_size, settings.batch_max_wait_ms, settings.inbox_high_watermark,
                             settings.inbox_low_watermark, settings.commit_interval_s)
        batches = BatchConsumer(consumer, settings.topics.submissions, limits, tier.handle, metrics,
                                outputs.undecodable, on_assigned=tier.partitions_assigned,
                                on_revoked=tier.partitions_revoked)
        async with _worker(tier, batches, slot, metrics, settings, settings.admin_port,
                           [tier.watch_escalations(), tier.recover_escalations()]) as running:
            yield running
    finally:
        await stack.aclose()
        await replies.stop()
        await consumer.stop()
        await producer.stop()
        if owned:
            moderation.close()


@contextlib.asynccontextmanager
async def fan_memory(settings: WorkerSettings, bootstrap: str, tier: str) -> AsyncIterator[FanMemory | None]:
    """The tier's memory of fans, followed from `fans.profiles` while the block runs; None when it is off."""
    if not settings.fan_memory:
        yield None
        return
    memory = FanMemory(settings.fan_memory_entries, settings.fan_retention_days * 86400)
    reader = FanMemoryReader(bootstrap, settings.topics.fans_profiles, memory, f"idolstream-{tier}-fans")
    await reader.start()
    try:
        yield memory
    finally:
        await reader.stop()


@contextlib.asynccontextmanager
async def deep_tier_service(
    settings: DeepTierSettings, bootstrap: str, slot: ModelSlot, metrics: WorkerMetrics
) -> AsyncIterator[RunningWorker]:
    persona = Persona.load(settings.persona_path)
    screen = ReplyScreen(TextFilter.from_file(settings.moderation_words_path), persona)
    consumer = make_consumer(
        bootstrap, settings.deep_group_id, "idolstream-deep", session_timeout_ms=settings.session_timeout_ms
    )
    producer = make_producer(bootstrap, "idolstream-deep")
    await producer.start()
    await consumer.start()
    stack = contextlib.AsyncExitStack()
    try:
        outputs = Outputs(producer, settings.topics, metrics, settings.dlq_max_original_bytes, screen)
        tier = DeepTier(settings, slot, persona, outputs, metrics,
                        await stack.enter_async_context(fan_memory(settings, bootstrap, "deep")))
        limits = BatchLimits(settings.deep_batch_max_size, settings.deep_batch_max_wait_ms,
                             settings.deep_inbox_high_watermark, settings.deep_inbox_low_watermark,
                             settings.commit_interval_s)
        batches = BatchConsumer(consumer, [settings.topics.items_deep], limits, tier.handle, metrics,
                                outputs.undecodable)
        async with _worker(tier, batches, slot, metrics, settings, settings.deep_admin_port, []) as running:
            yield running
    finally:
        await stack.aclose()
        await consumer.stop()
        await producer.stop()


def load_draw_runner(settings: DrawTierSettings, model_id: str):
    """A draw model loaded by registry id (blocking; tiny pipelines are built first when missing)."""
    from stream.draw.runner import DrawRunner

    registry = ModelRegistry.load(settings.registry_path)
    build_missing(registry, PROJECT_ROOT)
    return DrawRunner(registry.get(model_id), PROJECT_ROOT)


async def load_draw_slot(settings: DrawTierSettings, metrics: DrawMetrics) -> ModelSlot:
    """The draw tier's model slot: switchable to any draw entry of the registry."""
    runner = await asyncio.to_thread(load_draw_runner, settings, settings.draw_model_id)

    def draw_ids() -> list[str]:
        return [spec.id for spec in ModelRegistry.load(settings.registry_path) if spec.tier == "draw"]

    return ModelSlot(runner, lambda model_id: load_draw_runner(settings, model_id), draw_ids,
                     ModelSwitchGate(settings.min_switch_interval_s), metrics)


@contextlib.asynccontextmanager
async def draw_tier_service(
    settings: DrawTierSettings, bootstrap: str, slot: ModelSlot, metrics: DrawMetrics,
    image_guard: ImageGuard | None = None,
) -> AsyncIterator[RunningWorker]:
    """A started draw tier running as a task; leaving the block stops it cleanly.

    `image_guard` defaults to the one the settings name (tests pass a guard whose verdicts they fix).
    """
    persona = Persona.load(settings.persona_path)
    screen = ReplyScreen(TextFilter.from_file(settings.moderation_words_path), persona)
    owned_guard = image_guard is None and settings.draw_image_guard_model_id is not None
    if owned_guard:
        loader = RegistryLoader(settings.registry_path)
        image_guard = ImageGuard(await asyncio.to_thread(loader, settings.draw_image_guard_model_id))
    consumer = make_consumer(
        bootstrap, settings.draw_group_id, "idolstream-draw", session_timeout_ms=settings.session_timeout_ms
    )
    producer = make_producer(bootstrap, "idolstream-draw")
    await producer.start()
    await consumer.start()
    try:
        outputs = Outputs(producer, settings.topics, metrics, settings.dlq_max_original_bytes, screen)
        tier = DrawTier(settings, slot, persona, outputs, metrics, image_guard)
        # One request per call (a picture is seconds of work); past max pending the partitions pause.
        limits = BatchLimits(1, 0, settings.draw_max_pending,
                             min(settings.draw_resume_below, settings.draw_max_pending - 1),
                             settings.commit_interval_s)
        batches = BatchConsumer(consumer, [settings.topics.items_draw], limits, tier.handle, metrics,
                                outputs.undecodable)
        async with _worker(tier, batches, slot, metrics, settings, settings.draw_admin_port, []) as running:
            yield running
    finally:
        await consumer.stop()
        await producer.stop()
        if owned_guard:
            image_guard.runner.close()


async def _seek_to_end(consumer, bootstrap: str, topic: str) -> None:
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolve the end now, before anything is escalated


@contextlib.asynccontextmanager
async def gateway_service(
    settings: GatewaySettings, bootstrap: str, metrics: GatewayMetrics | None = None
) -> AsyncIterator[tuple[Gateway, asyncio.Task]]:
    settings.secret()  # no secret, no gateway: say so before connecting to anything
    consumer = make_consumer(bootstrap, None, "idolstream-gateway", auto_offset_reset="latest")
    await consumer.start()
    task = None
    try:
        gateway = Gateway(settings, consumer, metrics or GatewayMetrics())
        await gateway.start(await partitions_of(bootstrap, settings.topics.replies),
                            await partitions_of(bootstrap, settings.topics.replies_retracted))
        task = asyncio.create_task(gateway.run(), name="gateway")
        yield gateway, task
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


async def until_signalled(*tasks: asyncio.Task) -> None:
    """Wait for SIGINT/SIGTERM (or a task ending on its own, which re-raises its error)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    for task in done - {waiter}:
        task.result()


async def _serve_tier(settings: WorkerSettings, model_id: str, service, tier: str, group_id: str) -> None:
    bootstrap = bootstrap_for(settings, start_local=False)
    await prepare_topics(settings, bootstrap)
    metrics = WorkerMetrics(tier)
    name = f"{tier} tier"
    slot = await load_slot(settings, model_id, metrics)
    async with service(settings, bootstrap, slot, metrics) as running:
        log.info("%s up: model %s, group %s, admin port %s", name, slot.model_id, group_id, running.admin_port)
        await until_signalled(running.task)
    slot.close()


async def serve_fast_tier(settings: FastTierSettings) -> None:
    await _serve_tier(settings, settings.model_id, fast_tier_service, "fast", settings.group_id)


async def serve_deep_tier(settings: DeepTierSettings) -> None:
    await _serve_tier(settings, settings.deep_model_id, deep_tier_service, "deep", settings.deep_group_id)


async def serve_draw_tier(settings: DrawTierSettings) -> None:
    bootstrap = bootstrap_for(settings, start_local=False)
    await prepare_topics(settings, bootstrap)
    metrics = DrawMetrics()
    slot = await load_draw_slot(settings, metrics)
    async with draw_tier_service(settings, bootstrap, slot, metrics) as running:
        log.info("draw tier up: model %s, group %s, admin port %s", slot.model_id, settings.draw_group_id,
                 running.admin_port)
        await until_signalled(running.task)
    slot.close()


async def serve_console(settings: ConsoleSettings) -> None:
    from consumers.console import console_service

    bootstrap = bootstrap_for(settings, start_local=False)
    async with console_service(settings, bootstrap) as (console, port):
        log.info("console up: http://%s:%d/ (sign in with `idolstream operator-token`)", settings.console_host, port)
        await until_signalled(console.reading)


async def serve_gateway(settings: GatewaySettings) -> None:
    bootstrap = bootstrap_for(settings, start_local=False)
    await prepare_topics(settings, bootstrap)
    async with gateway_service(settings, bootstrap) as (gateway, task):
        log.info("gateway up: http://%s:%d/?room=<room>", settings.host, gateway.port)
        await until_signalled(task)
