"""A tier's memory of fans: `fans.profiles` read into a bounded `FanMemory`, and its line in her prompt.

Every tier instance reads every partition of the compacted topic from its start, without
a consumer group (each needs all of it), then follows it. A lookup never waits for the
reader: until a fan's profile has arrived they are answered as a first-timer, and the
lookup counts as a miss (`idolstream_fan_memory_lookups_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import TopicPartition

from stream.contracts import Submission, utcnow
from stream.fans.memory import FanMemory
from stream.kafka_io import make_consumer, partitions_of
from stream.metrics import WorkerMetrics
from stream.persona import Persona

log = logging.getLogger("idolstream.fans")


def remembered(memory: FanMemory | None, submission: Submission, persona: Persona,
               metrics: WorkerMetrics) -> str | None:
    """The prompt line about the fan who sent `submission`; None when fan memory is off."""
    if memory is None:
        return None
    line, hit = memory.line_for(submission, persona.fan_memory, utcnow())
    metrics.fan_memory_lookups.labels(metrics.tier, "hit" if hit else "miss").inc()
    metrics.fan_memory_profiles.set(len(memory))
    return line


class FanMemoryReader:
    """Follows `fans.profiles` into `memory` until stopped; `caught_up` is set once the start's end is reached."""

    def __init__(self, bootstrap: str, topic: str, memory: FanMemory, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.memory = memory
        self.client_id = client_id
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fan-memory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        consumer = make_consumer(self.bootstrap, None, self.client_id)
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p) for p in await partitions_of(self.bootstrap, self.topic)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for records in batches.values():
                    for record in records:
                        self.memory.apply(record.key, record.value)
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(*(self._reached(consumer, tp, end) for tp, end in ends.items()))
                ):
                    self.caught_up.set()
                    log.info("fan memory caught up: %d profiles", len(self.memory))
        except asyncio.CancelledError:
            raise
        except Exception:  # the tier answers without memory rather than stopping
            log.exception("fan memory reader stopped; fans are answered as first-timers")
        finally:
            await consumer.stop()

    @staticmethod
    async def _reached(consumer, tp: TopicPartition, end: int) -> bool:
        return await consumer.position(tp) >= end
