"""What fan memory costs the fast path: p50 and p99 with it off and on, the same messages, one run.

    .venv/bin/python bench/fan_memory_fast_path.py [--items 60] [--rate 4] [--rounds 3] [--regulars 1.0]

With fan memory on (IDOLSTREAM_FAN_MEMORY) the tier follows `fans.profiles` into a bounded
map, looks every fan up before building the prompt, and her prompt carries a line about
them: a first-timer's welcome, or what she remembers of a regular (how many items, since
when, what they sent last time and what she answered). Before each run with it on, a
profile for each fan of the messages (`--regulars`, the share of fans who are regulars;
all by default, the longest prompts) is put on that run's `fans.profiles` as the fans app
writes them: an earlier item two days ago, with its text, and her answer to it.

Both settings run in the same process on the same messages (sample pictures with fans'
texts), each run with its own topics and a fresh fast tier that has answered a few
warm-up items first (and, with memory on, has read every profile). After a first run that
is not counted, the runs alternate (off, on, then on, off, ...). Latency is from an item
being produced to its reply being read back from Kafka; the persona checks are off (a
random model's replies would miss them and be regenerated, drowning the difference).
The tier's own metrics say where an answer's time went (mean per stage) and how many
tokens it generated; the in-process figures time the lookup and the line itself, and
count the line's tokens. Prints a table and one JSON line. Uses KAFKA_BOOTSTRAP when set,
else a throwaway local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import ab_summary, bench_bootstrap, offer_and_collect, pct, print_ab  # noqa: E402
from consumers.model_slot import ModelSlot  # noqa: E402
from consumers.services import fast_tier_service, prepare_topics  # noqa: E402
from producers.samples import FAN_TEXTS, sample_item, sample_reply  # noqa: E402
from stream.contracts import Submission, utcnow  # noqa: E402
from stream.fans.memory import FanMemory  # noqa: E402
from stream.fans.profiles import FanProfile, SentItem, profile_key, record_item, record_reply  # noqa: E402
from stream.kafka_io import make_producer  # noqa: E402
from stream.metrics import WorkerMetrics  # noqa: E402
from stream.models.registry import ModelRegistry  # noqa: E402
from stream.models.runtime import TransformersRunner  # noqa: E402
from stream.models.tiny import build_missing  # noqa: E402
from stream.persona import Persona  # noqa: E402
from stream.settings import FastTierSettings  # noqa: E402

WARM_UP = 4
ROOM = "bench-room"
STAGES = ("queue", "admission", "preprocess", "inference")
LAST_ANSWER = "Your drawing made my whole day, the colours are so warm! Send me another one soon, okay?"


def build_messages(count: int, prefix: str) -> list[Submission]:
    texts = [t for t in FAN_TEXTS if t]
    return [sample_item(n).to_submission(ROOM, item_id=f"{prefix}-{n}", text=texts[n % len(texts)])
            for n in range(count)]


def fresh(messages: list[Submission], tag: str) -> list[Submission]:
    """The same fans, texts and pictures under new item ids, created now."""
    return [m.model_copy(update={"item_id": f"{m.item_id}-{tag}", "created_at": utcnow()}) for m in messages]


def profiles(messages: list[Submission], regulars: float) -> dict[str, FanProfile]:
    """A profile for the first `regulars` share of the messages' fans, as the fans app builds one: an earlier
    item (two days ago, with a text) and her answer to it."""
    fans: dict[str, Submission] = {}
    for message in messages:
        fans.setdefault(message.user.id, message)
    chosen = list(fans.values())[: round(len(fans) * regulars)]
    made = {}
    for n, message in enumerate(chosen):
        earlier = SentItem(item_id=f"earlier-{n}", kind=message.kind, room=ROOM, user=message.user,
                           text=FAN_TEXTS[n % len(FAN_TEXTS)] or "hi!", created_at=utcnow() - timedelta(days=2))
        profile, _ = record_item(None, earlier)
        profile = record_reply(profile, sample_reply(ROOM, n, item_id=earlier.item_id, text=LAST_ANSWER))
        made[profile_key(ROOM, message.user.id)] = profile
    return made


async def publish(bootstrap: str, topic: str, made: dict[str, FanProfile]) -> None:
    producer = make_producer(bootstrap, "bench-profiles")
    await producer.start()
    try:
        for key, profile in made.items():
            await producer.send_and_wait(topic, orjson.dumps(profile.to_json()), key=key.encode())
    finally:
        await producer.stop()


def as_values(submissions: list[Submission]) -> list[tuple[str, bytes, str]]:
    return [(s.item_id, s.to_json(), s.kind) for s in submissions]


def lookups(metrics: WorkerMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("idolstream_fan_memory_lookups_total",
                                             {"tier": "fast", "result": result}) or 0.0


def stage_totals(metrics: WorkerMetrics) -> dict[str, tuple[float, float]]:
    """(seconds, items) so far per stage of the answered items, and (tokens generated, items)."""
    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, {"tier": "fast", **labels}) or 0.0

    totals = {stage: (value("idolstream_stage_seconds_sum", stage=stage),
                      value("idolstream_stage_seconds_count", stage=stage)) for stage in STAGES}
    totals["tokens"] = (value("idolstream_generated_tokens_total"),
                        value("idolstream_stage_seconds_count", stage="inference"))
    return totals


async def one_run(bootstrap: str, runner, memory: bool, made: dict[str, FanProfile], messages: list[Submission],
                  warm_up: list[Submission], rate: float, batch: int) -> tuple[list[float], dict[str, int], dict]:
    """Latencies of one run, the lookups of its counted items (hits, misses), and their seconds and
    count per stage."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = FastTierSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, group_id=f"{prefix}g", topic_partitions=1,
        batch_max_size=batch, fan_memory=memory, check_replies=False,
        # the fast path alone: no escalation, no shedding
        escalate=False, user_max_items=0, room_max_replies=0, max_age_s=3600,  # items are built before the runs
    )
    await prepare_topics(settings, bootstrap)
    if memory:
        await publish(bootstrap, settings.topics.fans_profiles, made)
    metrics = WorkerMetrics("fast")
    async with fast_tier_service(settings, bootstrap, ModelSlot.around(runner, metrics), metrics):
        await offer_and_collect(bootstrap, settings, as_values(warm_up), rate)  # joined, and the model warm
        extra = 0
        while memory and metrics.registry.get_sample_value("idolstream_fan_memory_profiles", {"tier": "fast"}) < len(
                made):  # its gauge is set at each lookup: one more warm-up item until it has read every profile
            extra += 1
            if extra > 20:
                raise RuntimeError("the tier's fan memory never read the profiles")
            await offer_and_collect(bootstrap, settings, as_values(fresh(warm_up[:1], f"more-{extra}")), rate)
        before = {result: lookups(metrics, result) for result in ("hit", "miss")}
        stages = stage_totals(metrics)
        latencies = (await offer_and_collect(bootstrap, settings, as_values(messages), rate))[0]
        spent = {stage: (total - stages[stage][0], n - stages[stage][1])
                 for stage, (total, n) in stage_totals(metrics).items()}
        return latencies, {result: int(lookups(metrics, result) - before[result]) for result in ("hit", "miss")}, spent


def in_process(made: dict[str, FanProfile], messages: list[Submission], repeat: int, tokenizer) -> dict[str, float]:
    """The lookup and the line, per item (µs), and the line's length (characters, and tokens of the model's
    tokenizer), with every profile held."""
    persona = Persona.load(ROOT / "config" / "persona.json")
    memory = FanMemory(100_000, 90 * 86400)
    for key, profile in made.items():
        memory.apply(key.encode(), orjson.dumps(profile.to_json()))
    now = utcnow()
    lines = [memory.line_for(m, persona.fan_memory, now)[0] for m in messages]
    started = time.perf_counter()
    for _ in range(repeat):
        for message in messages:
            memory.line_for(message, persona.fan_memory, now)
    return {"lookup_and_line_us": round((time.perf_counter() - started) / (repeat * len(messages)) * 1e6, 1),
            "line_chars": round(statistics.fmean(len(line) for line in lines)),
            "line_tokens": round(statistics.fmean(len(tokenizer(line)["input_ids"]) for line in lines))}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--rate", type=float, default=4.0, help="offered items per second")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, alternating")
    parser.add_argument("--regulars", type=float, default=1.0, help="share of the fans with a profile (0 to 1)")
    parser.add_argument("--model", default="tiny-qwen3vl-moe")
    parser.add_argument("--batch", type=int, default=4, help="fast tier batch_max_size")
    args = parser.parse_args()

    messages = build_messages(args.items, "bench")
    warm_up = build_messages(WARM_UP, "warm")
    made = profiles(messages, args.regulars)
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    rounds: dict[str, list[dict]] = {"off": [], "on": []}
    found = {"hit": 0, "miss": 0}
    spent: dict[str, dict[str, list[float]]] = {name: {stage: [0.0, 0.0] for stage in (*STAGES, "tokens")}
                                                 for name in latencies}
    async with bench_bootstrap() as bootstrap:
        registry = ModelRegistry.load(ROOT / "config" / "models.json")
        build_missing(registry, ROOT)
        runner = await asyncio.to_thread(TransformersRunner.load, registry.get(args.model), ROOT)
        try:
            # Not counted: the model's first calls on each picture size are slow, whichever setting runs first.
            await one_run(bootstrap, runner, False, made, fresh(messages, "first"), fresh(warm_up, "first"),
                          args.rate, args.batch)
            for n in range(args.rounds):
                for name in (("off", "on") if n % 2 == 0 else ("on", "off")):
                    tag = f"{n}-{name}"
                    got, counted, stages = await one_run(bootstrap, runner, name == "on", made,
                                                         fresh(messages, tag), fresh(warm_up, tag), args.rate,
                                                         args.batch)
                    latencies[name] += got
                    for stage, (seconds, count) in stages.items():
                        spent[name][stage][0] += seconds
                        spent[name][stage][1] += count
                    rounds[name].append({"p50_ms": pct(got, 50), "p99_ms": pct(got, 99)})
                    if name == "on":
                        found = {k: found[k] + counted[k] for k in found}
                    print(f"round {n + 1} {name:<4} p50 {pct(got, 50):>7} ms  p99 {pct(got, 99):>7} ms"
                          + (f"  ({counted['hit']} hits, {counted['miss']} misses)" if name == "on" else ""),
                          flush=True)
        finally:
            runner.close()
    costs = in_process(made, messages, repeat=200,
                       tokenizer=AutoTokenizer.from_pretrained(registry.get(args.model).local_dir(ROOT)))

    results = ab_summary(latencies, rounds)
    for name, r in results.items():
        r["stage_mean_ms"] = {stage: round(seconds / n * 1000, 1) if n else None
                              for stage, (seconds, n) in spent[name].items() if stage in STAGES}
        r["tokens_per_answer"] = round(spent[name]["tokens"][0] / max(1.0, spent[name]["tokens"][1]), 1)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, model {args.model}, {args.items} items from "
          f"{len({m.user.id for m in messages})} fans at {args.rate}/s offered, {args.rounds} rounds of each, "
          f"{len(made)} fans with a profile; persona checks off")
    added = print_ab(results, "fan memory", "off", "on")
    for name, r in results.items():  # where an answer's time went (the tier's stage histogram, means)
        print(f"{name} mean ms per stage: " + ", ".join(f"{stage} {ms}" for stage, ms in r["stage_mean_ms"].items())
              + f"; {r['tokens_per_answer']} tokens generated per answer")
    print(f"lookups with memory on: {found['hit']} hits, {found['miss']} misses; in process, the lookup and the "
          f"line take {costs['lookup_and_line_us']} µs per item, the line is {costs['line_chars']} characters, "
          f"{costs['line_tokens']} tokens more in her prompt")
    print(orjson.dumps({"items": args.items, "offered_rate": args.rate, "rounds": args.rounds, "model": args.model,
                        "regulars": args.regulars, "profiles": len(made), **results, "on_minus_off": added,
                        "lookups": found, "in_process": costs}).decode())


if __name__ == "__main__":
    asyncio.run(main())
