"""What moderation adds to the fast path's p50 and p99: the shipped word list against a bare one.

    .venv/bin/python bench/moderation_overhead.py [--items 60] [--rate 4] [--rounds 3] [--model tiny-qwen3vl-moe]

Moderation has no off switch: every fan's name and text, and every line she says, passes
the word filter. The fair comparison is the filter with the shipped list
(config/moderation/words.json) against a bare list, written to a temporary file: one
category with one term no text contains (a word list needs at least one category, so an
empty one is refused). The bare list still normalises every text; what it saves is the
matching. The in-process figures at the end time the filter itself per item, with each
list: the fan's name and text, and one reply screened.

Both lists run in the same process on the same messages: sample pictures with fans'
texts in English, Chinese and Japanese, none of which the shipped list stops (checked
before the runs), so every item gets one reply on the replies topic. After a first run
that is not counted, the runs alternate (shipped, bare, then bare, shipped, ...), each
with its own topics and a fresh fast tier that has answered a few warm-up items first.
Latency is from an item being produced to its reply being read back from Kafka. The
persona checks are off (`--check-replies` turns them on): a random model's replies miss
them and are regenerated, a second model call per item that would drown the difference.
Prints a table and one JSON line. Uses KAFKA_BOOTSTRAP when set, else a throwaway local
broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import ab_summary, bench_bootstrap, offer_and_collect, pct, print_ab  # noqa: E402
from bench.moderation import JA_DANMAKU, REPLIES, ZH_DANMAKU  # noqa: E402
from consumers.model_slot import ModelSlot  # noqa: E402
from consumers.services import fast_tier_service, prepare_topics  # noqa: E402
from producers.samples import DANMAKU, FAN_TEXTS, sample_item, sample_reply  # noqa: E402
from stream.contracts import Submission, utcnow  # noqa: E402
from stream.metrics import WorkerMetrics  # noqa: E402
from stream.models.registry import ModelRegistry  # noqa: E402
from stream.models.runtime import TransformersRunner  # noqa: E402
from stream.models.tiny import build_missing  # noqa: E402
from stream.moderation.gate import ReplyScreen, judge_fan  # noqa: E402
from stream.moderation.text_filter import TextFilter  # noqa: E402
from stream.persona import Persona  # noqa: E402
from stream.reasons import ModerationAction  # noqa: E402
from stream.settings import FastTierSettings  # noqa: E402

SHIPPED = ROOT / "config" / "moderation" / "words.json"
BARE_LIST = {"categories": {"unused": {"action": "review", "terms": ["zqxjvwkq"]}}, "allow": []}
ZH_TEXTS = ["我给你画了一张画！", "这是我家的猫，它叫年糕", "今天的直播太好玩了，明天还来", "主播看看我新买的手办～"]
JA_TEXTS = ["ミライちゃんの絵を描きました！", "今日の配信も楽しかった！", "うちの猫です、見て見て"]
WARM_UP = 4


def texts() -> list[str]:
    """Fans' texts in English, Chinese and Japanese, danmaku among them."""
    return [t for t in FAN_TEXTS if t] + ZH_TEXTS + JA_TEXTS + ZH_DANMAKU + JA_DANMAKU + DANMAKU


def build_messages(count: int, prefix: str) -> list[Submission]:
    pool = texts()
    return [sample_item(n).to_submission("bench-room", item_id=f"{prefix}-{n}", text=pool[n % len(pool)])
            for n in range(count)]


def fresh(messages: list[Submission], tag: str) -> list[Submission]:
    """The same texts and pictures under new item ids, created now."""
    return [m.model_copy(update={"item_id": f"{m.item_id}-{tag}", "created_at": utcnow()}) for m in messages]


def stopped_by(text_filter: TextFilter, submissions: list[Submission]) -> list[str]:
    return [f"{s.item_id}: {s.user.display_name!r} / {s.text!r}" for s in submissions
            if judge_fan(text_filter, s, utcnow()).action != ModerationAction.ALLOW]


async def one_run(bootstrap: str, runner, words: Path, messages: list[Submission], warm_up: list[Submission],
                  rate: float, batch: int, check_replies: bool) -> list[float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = FastTierSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, group_id=f"{prefix}g", topic_partitions=1,
        batch_max_size=batch, moderation_words_path=words, check_replies=check_replies,
        # the fast path alone: no escalation, no shedding
        escalate=False, user_max_items=0, room_max_replies=0, max_age_s=3600,  # items are built before the runs
    )
    await prepare_topics(settings, bootstrap)
    metrics = WorkerMetrics("fast")
    async with fast_tier_service(settings, bootstrap, ModelSlot.around(runner, metrics), metrics):
        await offer_and_collect(bootstrap, settings, as_values(warm_up), rate)  # joined, and the model warm
        return (await offer_and_collect(bootstrap, settings, as_values(messages), rate))[0]


def as_values(submissions: list[Submission]) -> list[tuple[str, bytes, str]]:
    return [(s.item_id, s.to_json(), s.kind) for s in submissions]


def per_item_us(run, repeat: int) -> float:
    """Mean µs per call of `run` over `repeat` passes (`run` returns how many items it did)."""
    started = time.perf_counter()
    done = sum(run() for _ in range(repeat))
    return (time.perf_counter() - started) / done * 1e6


def in_process_costs(filters: dict[str, TextFilter], messages: list[Submission], repeat: int) -> dict[str, dict]:
    """The word filter's own time per item, fan side (name and text) and reply side (one line screened)."""
    persona = Persona.load(ROOT / "config" / "persona.json")
    replies = [sample_reply("bench-room", n, text=REPLIES[n % len(REPLIES)]) for n in range(len(messages))]
    costs = {}
    for name, text_filter in filters.items():
        screen = ReplyScreen(text_filter, persona)
        now = utcnow()

        def fans() -> int:
            for submission in messages:
                judge_fan(text_filter, submission, now)
            return len(messages)

        def lines() -> int:
            for reply in replies:
                screen.screen(reply, now)
            return len(replies)

        costs[name] = {"fan_us": round(per_item_us(fans, repeat), 1), "reply_us": round(per_item_us(lines, repeat), 1)}
    return costs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--rate", type=float, default=4.0, help="offered items per second")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each list, alternating")
    parser.add_argument("--model", default="tiny-qwen3vl-moe")
    parser.add_argument("--batch", type=int, default=4, help="fast tier batch_max_size")
    parser.add_argument("--check-replies", action="store_true", help="persona checks on (regenerations included)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="idolstream-bench-") as tmp:
        bare = Path(tmp) / "bare-words.json"
        bare.write_bytes(orjson.dumps(BARE_LIST))
        lists = {"shipped": SHIPPED, "bare": bare}
        filters = {name: TextFilter.from_file(path) for name, path in lists.items()}
        messages = build_messages(args.items, "bench")
        warm_up = build_messages(WARM_UP, "warm")
        if stopped := stopped_by(filters["shipped"], messages + warm_up):
            raise SystemExit("the shipped list stops some of the messages (they would get no reply):\n"
                             + "\n".join(stopped))
        latencies: dict[str, list[float]] = {name: [] for name in lists}
        rounds: dict[str, list[dict]] = {name: [] for name in lists}
        async with bench_bootstrap() as bootstrap:
            registry = ModelRegistry.load(ROOT / "config" / "models.json")
            build_missing(registry, ROOT)
            runner = await asyncio.to_thread(TransformersRunner.load, registry.get(args.model), ROOT)
            try:
                # Not counted: the model's first calls on each picture size are slow, whichever list runs first.
                await one_run(bootstrap, runner, lists["shipped"], fresh(messages, "first"), fresh(warm_up, "first"),
                              args.rate, args.batch, args.check_replies)
                for n in range(args.rounds):
                    for name in (("shipped", "bare") if n % 2 == 0 else ("bare", "shipped")):
                        tag = f"{n}-{name}"
                        got = await one_run(bootstrap, runner, lists[name], fresh(messages, tag), fresh(warm_up, tag),
                                            args.rate, args.batch, args.check_replies)
                        latencies[name] += got
                        rounds[name].append({"p50_ms": pct(got, 50), "p99_ms": pct(got, 99)})
                        print(f"round {n + 1} {name:<8} p50 {pct(got, 50):>7} ms  p99 {pct(got, 99):>7} ms", flush=True)
            finally:
                runner.close()
        costs = in_process_costs(filters, messages, repeat=200)

    results = ab_summary(latencies, rounds)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, model {args.model}, {args.items} items at "
          f"{args.rate}/s offered, {args.rounds} rounds of each list, persona checks "
          f"{'on' if args.check_replies else 'off'}")
    added = print_ab(results, "word list", "bare", "shipped")
    print("in process, µs per item: " + ", ".join(
        f"{name}: fan name+text {c['fan_us']}, reply {c['reply_us']}" for name, c in costs.items()))
    print(orjson.dumps({"items": args.items, "offered_rate": args.rate, "rounds": args.rounds, "model": args.model,
                        "check_replies": args.check_replies, **results, "shipped_minus_bare": added,
                        "in_process_us": costs}).decode())


if __name__ == "__main__":
    asyncio.run(main())
