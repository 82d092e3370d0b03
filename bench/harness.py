"""What the benchmarks share: a broker to run against, offered load with its replies timed, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
from aiokafka import TopicPartition

from stream.kafka_io import make_consumer, make_producer, partitions_of
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


async def offer_and_collect(bootstrap: str, settings, messages: list[tuple[str, bytes, str]],
                            rate: float) -> tuple[list[float], float]:
    """Produce `(item_id, value, kind)` messages at `rate`/s; each one's latency (ms) to its reply, and items/s.

    Replies are read from the replies topic's end as it is before the first message, so
    replies to earlier (warm-up) items are not counted.
    """
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    wanted = {item_id for item_id, _, _ in messages}
    reader = make_consumer(bootstrap, None, "bench-reader", auto_offset_reset="earliest")
    await reader.start()
    topic = settings.topics.replies
    parts = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    reader.assign(parts)
    for part, end in (await reader.end_offsets(parts)).items():
        reader.seek(part, end)

    async def collect() -> None:
        while len(received) < len(wanted):
            for batch in (await reader.getmany(timeout_ms=100)).values():
                now = time.monotonic()
                for record in batch:
                    item_id = orjson.loads(record.value)["item_id"]
                    if item_id in wanted:
                        received.setdefault(item_id, now)

    collector = asyncio.create_task(collect())
    producer = make_producer(bootstrap, "bench-offer")
    await producer.start()
    try:
        start = time.monotonic()
        for n, (item_id, value, kind) in enumerate(messages):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))  # fixed offered rate
            sent[item_id] = time.monotonic()
            await producer.send_and_wait(settings.topics.for_kind(kind), value, key=b"bench-room")
        await asyncio.wait_for(collector, timeout=600)
    finally:
        collector.cancel()
        await producer.stop()
        await reader.stop()
    latencies = [(received[i] - sent[i]) * 1000 for i in sent]
    return latencies, len(messages) / (max(received.values()) - min(sent.values()))


def pct(values: list[float], q: int) -> float | None:
    """The q-th percentile, rounded to 0.1 (None without values)."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def ab_summary(latencies: dict[str, list[float]], rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """Per setting of an A/B run: p50, p99 and mean over every round, the item count and each round's figures."""
    return {name: {"p50_ms": pct(values, 50), "p99_ms": pct(values, 99), "mean_ms": round(statistics.fmean(values), 1),
                   "items": len(values), "rounds": rounds[name]}
            for name, values in latencies.items()}


def print_ab(results: dict[str, dict], column: str, base: str, other: str) -> dict[str, float]:
    """The A/B table (`other` minus `base` last) and each setting's spread from round to round; the differences."""
    added = {key: round(results[other][key] - results[base][key], 1) for key in ("p50_ms", "p99_ms", "mean_ms")}
    print(f"{column:<24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, r in results.items():
        print(f"{name:<24}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['mean_ms']:>10}")
    print(f"{f'{other} - {base}':<24}{added['p50_ms']:>10}{added['p99_ms']:>10}{added['mean_ms']:>10}")
    for name, r in results.items():  # what the same setting gives from one run to the next
        p50s, p99s = [x["p50_ms"] for x in r["rounds"]], [x["p99_ms"] for x in r["rounds"]]
        print(f"{name} from run to run: p50 {min(p50s)}-{max(p50s)} ms, p99 {min(p99s)}-{max(p99s)} ms")
    return added


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
