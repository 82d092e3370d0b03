"""Fast path vs. a bare aiokafka loop, over the same messages at the same offered rate.

    .venv/bin/python bench/fast_path.py [--items 60] [--rate 4] [--model tiny-qwen3vl-moe]

Both runs read the same pre-built submissions from their own topics and produce one
record per item to their own replies topic; latency is from the moment an item is
produced to the moment its reply is read back from Kafka. The bare loop decodes nothing
and runs no model: it is the floor set by Kafka and aiokafka on this machine. Prints a
table and one JSON line. Uses KAFKA_BOOTSTRAP when set, else a throwaway local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers.model_slot import ModelSlot  # noqa: E402
from consumers.services import fast_tier_service, prepare_topics  # noqa: E402
from stream.metrics import WorkerMetrics  # noqa: E402
from producers.samples import sample_item  # noqa: E402
from stream.kafka_io import Checkpoint, make_consumer, make_producer  # noqa: E402
from bench.harness import bench_bootstrap, offer_and_collect, pct  # noqa: E402
from stream.models.registry import ModelRegistry  # noqa: E402
from stream.models.runtime import TransformersRunner  # noqa: E402
from stream.models.tiny import build_missing  # noqa: E402
from stream.settings import FastTierSettings  # noqa: E402


async def bare_loop(bootstrap: str, settings: FastTierSettings, stop: asyncio.Event) -> None:
    """Consume, produce a small record per item, commit after the ack: no decoding, no model."""
    consumer = make_consumer(bootstrap, settings.group_id, "bench-bare")
    producer = make_producer(bootstrap, "bench-bare")
    await consumer.start()
    await producer.start()
    checkpoint = Checkpoint(consumer)
    consumer.subscribe(list(settings.topics.submissions))
    try:
        while not stop.is_set():
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                for record in batch:
                    checkpoint.track(record)
                    item_id = orjson.loads(record.value)["item_id"]
                    delivery = await producer.send(settings.topics.replies, orjson.dumps({"item_id": item_id}), key=record.key)
                    await checkpoint.acknowledge(record, delivery)
            await checkpoint.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def run_bare(bootstrap, settings, messages, rate):
    stop = asyncio.Event()
    loop = asyncio.create_task(bare_loop(bootstrap, settings, stop))
    try:
        return await offer_and_collect(bootstrap, settings, messages, rate)
    finally:
        stop.set()
        await loop


async def run_fast(bootstrap, settings, messages, rate, runner):
    metrics = WorkerMetrics("fast")
    async with fast_tier_service(settings, bootstrap, ModelSlot.around(runner, metrics), metrics):
        return await offer_and_collect(bootstrap, settings, messages, rate)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--rate", type=float, default=4.0, help="offered items per second")
    parser.add_argument("--model", default="tiny-qwen3vl-moe")
    parser.add_argument("--batch", type=int, default=4, help="fast tier batch_max_size")
    args = parser.parse_args()

    async with bench_bootstrap() as bootstrap:
        registry = ModelRegistry.load(ROOT / "config" / "models.json")
        build_missing(registry, ROOT)
        runner = await asyncio.to_thread(TransformersRunner.load, registry.get(args.model), ROOT)
        submissions = [sample_item(n).to_submission("bench-room", item_id=f"bench-{n}") for n in range(args.items)]
        messages = [(s.item_id, s.to_json(), s.kind) for s in submissions]
        results = {}
        for name, run in (("bare_aiokafka", run_bare), ("fast_tier", run_fast)):
            prefix = f"bench{uuid.uuid4().hex[:8]}."
            settings = FastTierSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, group_id=f"{prefix}g",
                                        topic_partitions=1, batch_max_size=args.batch,
                                        # the fast path alone: no escalation, no shedding
                                        escalate=False, user_max_items=0, room_max_replies=0,
                                        max_age_s=3600)  # the items are built once, before both runs
            await prepare_topics(settings, bootstrap)
            extra = (runner,) if name == "fast_tier" else ()
            latencies, throughput = await run(bootstrap, settings, messages, args.rate, *extra)
            results[name] = {"items_per_s": round(throughput, 2), "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99)}
        runner.close()

    bare, fast = results["bare_aiokafka"], results["fast_tier"]
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, model {args.model}, {args.items} items at {args.rate}/s offered")
    print(f"{'':<16}{'items/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in results.items():
        print(f"{name:<16}{r['items_per_s']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}")
    ratio = {"p50_latency_x": round(fast["p50_ms"] / bare["p50_ms"], 1), "throughput_ratio": round(fast["items_per_s"] / bare["items_per_s"], 3)}
    print(f"fast/bare: p50 latency x{ratio['p50_latency_x']}, throughput ratio {ratio['throughput_ratio']}")
    print(orjson.dumps({"items": args.items, "offered_rate": args.rate, "model": args.model, **results, "ratio": ratio}).decode())


if __name__ == "__main__":
    asyncio.run(main())
