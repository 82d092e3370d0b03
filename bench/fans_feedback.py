"""Feedback events per second the fans app sustains, with its tables, on this machine.

    .venv/bin/python bench/fans_feedback.py [--replies 5000] [--feedback 20000] [--rooms 24] [--partitions 6]

Runs the real app (`idolstream serve fans`, a process of its own, as deployed) against a
backlog: N answers (over a few models and persona versions, in R rooms) and M likes and
reports on them (one in twenty a report, threshold 3, so a few replies are retracted) are
produced before it starts. Every record goes through its tables (reply tallies, model
tallies, the rooms' windows, each write also a changelog record). The app's /metrics are
read every 50 ms: the rate is M over the time from the first feedback counted to the last,
and the same for the answers; the app's own CPU time over that span is given per record
(the broker's is not in it). Its table views are read at the end to check that every
record counted once. Prints a table and one JSON line. Uses KAFKA_BOOTSTRAP when set, else
a throwaway local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_bootstrap, rss_kib  # noqa: E402
from producers.samples import sample_reply  # noqa: E402
from stream.contracts import Feedback, UserRef, new_id, utcnow  # noqa: E402
from stream.kafka_io import ensure_topics, make_producer  # noqa: E402
from stream.local_kafka import find_free_port  # noqa: E402
from stream.tokens import issue_operator_token  # noqa: E402
from stream.topics import TopicNames, topic_plan  # noqa: E402

SECRET = "bench-console-secret-0123456789abcdef"
MODELS = [("tiny-qwen3vl-moe", "mirai-1"), ("tiny-qwen3vl-moe", "mirai-2"), ("tiny-qwen3vl-thinking", "mirai-2")]
REPORT_SHARE = 0.05
POLL_S = 0.05


def backlog(replies: int, feedback: int, rooms: int, seed: int = 7) -> tuple[list, list[Feedback]]:
    rng = random.Random(seed)
    answers = []
    for n in range(replies):
        model_id, persona = MODELS[n % len(MODELS)]
        reply = sample_reply(f"room-{n % rooms}", n)
        answers.append(reply.model_copy(update={"model_id": model_id, "persona_version": persona}))
    records = [
        Feedback(feedback_id=new_id(), kind="report" if rng.random() < REPORT_SHARE else "like",
                 reply_id=(reply := rng.choice(answers)).reply_id, room=reply.room,
                 user=UserRef(id=f"viewer-{n}", display_name=f"Viewer {n}"), at=utcnow())
        for n in range(feedback)
    ]
    return answers, records


async def produce(bootstrap: str, topic: str, records) -> None:
    producer = make_producer(bootstrap, "bench-fans")
    await producer.start()
    try:
        sends = [await producer.send(topic, record.to_json(), key=record.room.encode()) for record in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def counters(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """Totals of the app's counters (labels summed)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families((await http.get(f"{url}/metrics", timeout=5)).text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=5000)
    parser.add_argument("--feedback", type=int, default=20000)
    parser.add_argument("--rooms", type=int, default=24)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()

    answers, records = backlog(args.replies, args.feedback, args.rooms)
    async with bench_bootstrap() as bootstrap:
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        names = TopicNames(prefix)
        await ensure_topics(bootstrap, topic_plan(names, args.partitions), 1)
        started = time.monotonic()
        await produce(bootstrap, names.replies, answers)
        await produce(bootstrap, names.feedback, records)
        print(f"produced {len(answers)} answers and {len(records)} feedback records in "
              f"{time.monotonic() - started:.1f} s", flush=True)

        port = find_free_port()
        work = Path(tempfile.mkdtemp(prefix="idolstream-bench-fans-"))  # faust's data directory goes here
        env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "IDOLSTREAM_TOPIC_PREFIX": prefix,
               "IDOLSTREAM_TOPIC_PARTITIONS": str(args.partitions), "IDOLSTREAM_FANS_PORT": str(port),
               "IDOLSTREAM_CONSOLE_SECRET": SECRET, "IDOLSTREAM_PERSONA_PATH": str(ROOT / "config" / "persona.json"),
               "IDOLSTREAM_MODERATION_WORDS_PATH": str(ROOT / "config" / "moderation" / "words.json")}
        url = f"http://127.0.0.1:{port}"
        with (work / "fans.log").open("wb") as log:
            app = subprocess.Popen([str(ROOT / ".venv" / "bin" / "idolstream"), "serve", "fans"], env=env, cwd=work,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            async with httpx.AsyncClient() as http:
                launched = time.monotonic()
                firsts: dict[str, float] = {}
                lasts: dict[str, float] = {}
                wanted = {"idolstream_feedback_total": len(records), "idolstream_fans_answers_total": len(answers)}
                cpu_at: dict[str, float] = {}
                async with asyncio.timeout(1800):
                    while len(lasts) < len(wanted):
                        if app.poll() is not None:
                            raise RuntimeError(f"the fans app exited; see {work / 'fans.log'}")
                        try:
                            totals = await counters(http, url)
                        except httpx.HTTPError:
                            await asyncio.sleep(POLL_S)
                            continue
                        now = time.monotonic()
                        for name, total in wanted.items():
                            seen = totals.get(name, 0.0)
                            if seen > 0 and name not in firsts:
                                firsts[name] = now
                                cpu_at.setdefault("first", cpu_seconds(app.pid))
                            if seen >= total and name not in lasts:
                                lasts[name] = now
                        await asyncio.sleep(POLL_S)
                cpu = cpu_seconds(app.pid) - cpu_at["first"]
                rss = rss_kib(app.pid)
                headers = {"Authorization": f"Bearer {issue_operator_token(SECRET.encode(), 'bench', 600)}"}
                models = (await http.get(f"{url}/tables/models", headers=headers)).json()["models"]
                final = await counters(http, url)
        finally:
            app.terminate()
            app.wait(timeout=60)

    feedback_s = lasts["idolstream_feedback_total"] - firsts["idolstream_feedback_total"]
    answers_s = lasts["idolstream_fans_answers_total"] - firsts["idolstream_fans_answers_total"]
    both_s = max(lasts.values()) - min(firsts.values())
    counted = {"answers": sum(m["answers"] for m in models), "likes": sum(m["likes"] for m in models),
               "reports": sum(m["reports"] for m in models)}
    reports = sum(1 for r in records if r.kind == "report")
    assert counted == {"answers": len(answers), "likes": len(records) - reports, "reports": reports}, counted
    result = {
        "replies": len(answers), "feedback": len(records), "rooms": args.rooms, "partitions": args.partitions,
        "feedback_per_s": round(len(records) / feedback_s, 1), "answers_per_s": round(len(answers) / answers_s, 1),
        "records_per_s": round((len(records) + len(answers)) / both_s, 1),
        "start_to_first_s": round(min(firsts.values()) - launched, 1), "busy_s": round(both_s, 1),
        "cpu_s": round(cpu, 1), "cpu_ms_per_record": round(cpu * 1000 / (len(records) + len(answers)), 2),
        "rss_mib": round(rss / 1024), "retracted": int(final.get("idolstream_retractions_total", 0)),
    }
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu; {len(answers)} answers and {len(records)} likes and "
          f"reports in {args.rooms} rooms over {args.partitions} partitions, produced before the app started")
    print(f"{'':<12}{'records':>9}{'seconds':>9}{'per s':>9}")
    print(f"{'feedback':<12}{len(records):>9}{feedback_s:>9.1f}{result['feedback_per_s']:>9}")
    print(f"{'answers':<12}{len(answers):>9}{answers_s:>9.1f}{result['answers_per_s']:>9}")
    print(f"{'both':<12}{len(records) + len(answers):>9}{both_s:>9.1f}{result['records_per_s']:>9}")
    print(f"first record counted {result['start_to_first_s']} s after launch; while busy the app used "
          f"{result['cpu_s']} CPU-s ({result['cpu_ms_per_record']} ms a record), RSS {result['rss_mib']} MiB at the "
          f"end; replies retracted: {result['retracted']}; the tables count every record once")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    asyncio.run(main())
