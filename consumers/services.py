"""Wiring: build each service from its settings and parts, start it, stop it cleanly.

The services themselves (`FastTier`, `Gateway`) take their parts as arguments; this module
is the only place that constructs Kafka clients and models for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from stream.kafka_io import bootstrap_for, ensure_topics, make_consumer, make_producer, partitions_of
from stream.metrics import FastTierMetrics, GatewayMetrics
from stream.models.registry import ModelRegistry
from stream.models.runtime import TransformersRunner
from stream.models.tiny import build_missing
from stream.persona import Persona
from stream.settings import CommonSettings, FastTierSettings, GatewaySettings
from stream.topics import topic_plan

from consumers.fast_tier import FastTier
from consumers.gateway import Gateway

log = logging.getLogger("idolstream")
PROJECT_ROOT = Path.cwd()


async def prepare_topics(settings: CommonSettings, bootstrap: str) -> list[str]:
    return await ensure_topics(bootstrap, topic_plan(settings.topics, settings.topic_partitions))


def load_fast_runner(settings: FastTierSettings) -> TransformersRunner:
    registry = ModelRegistry.load(settings.registry_path)
    build_missing(registry, PROJECT_ROOT)
    return TransformersRunner.load(registry.get(settings.model_id), PROJECT_ROOT)


@contextlib.asynccontextmanager
async def fast_tier_service(
    settings: FastTierSettings, bootstrap: str, runner: TransformersRunner, metrics: FastTierMetrics | None = None
) -> AsyncIterator[tuple[FastTier, asyncio.Task]]:
    """A started fast tier running as a task; leaving the block stops it cleanly."""
    consumer = make_consumer(
        bootstrap, settings.group_id, "idolstream-fast", session_timeout_ms=settings.session_timeout_ms
    )
    producer = make_producer(bootstrap, "idolstream-fast")
    await producer.start()
    await consumer.start()
    tier = FastTier(settings, consumer, producer, runner, Persona.load(settings.persona_path), metrics or FastTierMetrics())
    task = asyncio.create_task(tier.run(), name="fast-tier")
    try:
        yield tier, task
    finally:
        tier.stop()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


@contextlib.asynccontextmanager
async def gateway_service(
    settings: GatewaySettings, bootstrap: str, metrics: GatewayMetrics | None = None
) -> AsyncIterator[tuple[Gateway, asyncio.Task]]:
    consumer = make_consumer(bootstrap, None, "idolstream-gateway", auto_offset_reset="latest")
    await consumer.start()
    gateway = Gateway(settings, consumer, metrics or GatewayMetrics())
    await gateway.start(await partitions_of(bootstrap, settings.topics.replies))
    task = asyncio.create_task(gateway.run(), name="gateway")
    try:
        yield gateway, task
    finally:
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


async def serve_fast_tier(settings: FastTierSettings) -> None:
    bootstrap = bootstrap_for(settings, start_local=False)
    await prepare_topics(settings, bootstrap)
    runner = await asyncio.to_thread(load_fast_runner, settings)
    metrics = FastTierMetrics()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, registry=metrics.registry)
    async with fast_tier_service(settings, bootstrap, runner, metrics) as (_, task):
        log.info("fast tier up: model %s (%s processor), group %s", runner.spec.id, runner.processor_kind, settings.group_id)
        await until_signalled(task)
    runner.close()


async def serve_gateway(settings: GatewaySettings) -> None:
    bootstrap = bootstrap_for(settings, start_local=False)
    await prepare_topics(settings, bootstrap)
    async with gateway_service(settings, bootstrap) as (gateway, task):
        log.info("gateway up: http://%s:%d/?room=<room>", settings.host, gateway.port)
        await until_signalled(task)
