"""What the benchmarks share: a broker to run against, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def until(check, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def gateway_process(bootstrap: str, prefix: str, secret: str, **settings: object):
    """`idolstream serve gateway` on a free loopback port, ready; its Popen and port.

    `settings` are gateway settings by name (client_queue=256 sets IDOLSTREAM_CLIENT_QUEUE).
    """
    port = find_free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "IDOLSTREAM_TOPIC_PREFIX": prefix,
           "IDOLSTREAM_PORT": str(port), "IDOLSTREAM_OVERLAY_SECRET": secret,
           **{f"IDOLSTREAM_{name.upper()}": str(value) for name, value in settings.items() if value is not None}}
    gateway = subprocess.Popen([str(ROOT / ".venv" / "bin" / "idolstream"), "serve", "gateway"], env=env, cwd=ROOT)
    try:
        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                if gateway.poll() is not None:
                    raise RuntimeError("the gateway exited") from None
                return False

        await until(ready)
        yield gateway, port
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
