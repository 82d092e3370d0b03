"""Both tiers under sample traffic: latency per tier, escalation share, holding-line latency.

    .venv/bin/python bench/two_tier.py [--items 60] [--rate 2] [--rooms 4] [--deadline-ms 8000]

Runs the fast tier (tiny-qwen3vl-moe) and the deep tier (tiny-qwen3vl-thinking) in this
process, each on half the cores, and offers sample items (fan images, maths questions,
long letters, packed comment walls) at a fixed rate across a few rooms. Latency is from
producing an item to reading its reply back from the replies topic. Shedding limits are
off: every item is meant to be answered. Prints a table and one JSON line. Uses
KAFKA_BOOTSTRAP when set, else a throwaway local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # registry and persona paths are relative to the project root
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consumers.demo import share_cores_between_tiers  # noqa: E402
from consumers.services import deep_tier_service, fast_tier_service, load_slot, prepare_topics  # noqa: E402
from producers.samples import sample_item  # noqa: E402
from stream.kafka_io import make_consumer, make_producer, partitions_of  # noqa: E402
from bench.harness import bench_bootstrap, pct  # noqa: E402
from stream.metrics import WorkerMetrics  # noqa: E402
from stream.settings import DeepTierSettings, FastTierSettings  # noqa: E402


async def run(bootstrap: str, args) -> dict:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    common = dict(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=2)
    fast = FastTierSettings(**common, group_id=f"{prefix}fast", user_max_items=0, room_max_replies=0,
                            deep_deadline_ms=args.deadline_ms)
    deep = DeepTierSettings(**common, deep_group_id=f"{prefix}deep")
    await prepare_topics(fast, bootstrap)
    share_cores_between_tiers()
    fast_metrics, deep_metrics = WorkerMetrics("fast"), WorkerMetrics("deep")
    fast_slot = await load_slot(fast, fast.model_id, fast_metrics)
    deep_slot = await load_slot(deep, deep.deep_model_id, deep_metrics)
    submissions = [sample_item(n).to_submission(f"room-{n % args.rooms}") for n in range(args.items)]

    sent: dict[str, float] = {}
    holding: dict[str, float] = {}
    answered: dict[str, tuple[float, dict]] = {}
    reader = make_consumer(bootstrap, None, "bench-reader", auto_offset_reset="earliest")
    await reader.start()
    parts = [TopicPartition(fast.topics.replies, p) for p in await partitions_of(bootstrap, fast.topics.replies)]
    reader.assign(parts)
    await reader.seek_to_beginning(*parts)

    async def collect() -> None:
        while len(answered) < len(submissions):
            for batch in (await reader.getmany(timeout_ms=100)).values():
                now = time.monotonic()
                for record in batch:
                    reply = orjson.loads(record.value)
                    if reply["role"] == "holding":
                        holding.setdefault(reply["item_id"], now)
                    else:
                        answered.setdefault(reply["item_id"], (now, reply))

    async with deep_tier_service(deep, bootstrap, deep_slot, deep_metrics), \
            fast_tier_service(fast, bootstrap, fast_slot, fast_metrics):
        collector = asyncio.create_task(collect())
        producer = make_producer(bootstrap, "bench-offer")
        await producer.start()
        try:
            start = time.monotonic()
            for n, sub in enumerate(submissions):
                await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))  # fixed offered rate
                sent[sub.item_id] = time.monotonic()
                await producer.send_and_wait(fast.topics.for_kind(sub.kind), sub.to_json(), key=sub.room.encode())
            await asyncio.wait_for(collector, timeout=900)
        finally:
            await producer.stop()
            await reader.stop()
    fast_slot.close()
    deep_slot.close()

    by_tier: dict[str, list[float]] = {}
    degraded: dict[str, int] = {}
    for item_id, (at, reply) in answered.items():
        by_tier.setdefault(reply["tier"], []).append((at - sent[item_id]) * 1000)
        if reply.get("degraded"):
            degraded[reply["degraded"]] = degraded.get(reply["degraded"], 0) + 1
    holding_ms = [(at - sent[i]) * 1000 for i, at in holding.items()]
    escalated = len(holding)
    return {
        "items": args.items, "offered_rate": args.rate, "rooms": args.rooms, "deadline_ms": args.deadline_ms,
        "escalated": escalated, "escalation_share": round(escalated / args.items, 3),
        "answers": {tier: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for tier, v in sorted(by_tier.items())},
        "holding_line": {"n": len(holding_ms), "p50_ms": pct(holding_ms, 50), "p99_ms": pct(holding_ms, 99)},
        "degraded": degraded,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--rate", type=float, default=2.0, help="offered items per second")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--deadline-ms", type=int, default=8000, help="deep answers are due within this")
    args = parser.parse_args()
    async with bench_bootstrap() as bootstrap:
        result = await run(bootstrap, args)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu; {args.items} items at {args.rate}/s over "
          f"{args.rooms} rooms; escalated {result['escalated']} ({result['escalation_share']:.0%})")
    print(f"{'answers by tier':<18}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}")
    for tier, r in result["answers"].items():
        print(f"{tier:<18}{r['n']:>5}{r['p50_ms']:>10}{r['p99_ms']:>10}")
    h = result["holding_line"]
    print(f"{'holding line':<18}{h['n']:>5}{h['p50_ms']:>10}{h['p99_ms']:>10}")
    print(f"degraded answers: {result['degraded'] or 'none'}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    asyncio.run(main())
