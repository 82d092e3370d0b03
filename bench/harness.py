"""What the benchmarks share: a broker to run against, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from stream.local_kafka import LocalKafka, find_free_port

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def bench_bootstrap() -> AsyncIterator[str]:
    """KAFKA_BOOTSTRAP when set, else a throwaway local broker that is stopped afterwards."""
    existing = os.environ.get("KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    broker = LocalKafka(Path(tempfile.mkdtemp(prefix="idolstream-bench-")), port=find_free_port(),
                        controller_port=find_free_port(), jars_root=ROOT / "var" / "kafka" / "jars")
    bootstrap = await asyncio.to_thread(broker.up)
    try:
        yield bootstrap
    finally:
        await asyncio.to_thread(broker.down)


def pct(values: list[float], q: int) -> float | None:
    """The q-th percentile, rounded to 0.1 (None without values)."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)
