"""Overlay gateway under load: N overlays across M rooms on loopback.

    .venv/bin/python bench/overlay_load.py [--overlays 200] [--rooms 20] [--rate 50] [--seconds 20]

Starts `idolstream serve gateway` as its own process (so its memory is its own), connects
N websocket overlays spread over M rooms, each with its room token, and produces synthetic
replies round-robin over the rooms at `--rate` per second for `--seconds` (both bounded).
Each overlay acks a reply as soon as it arrives, so this measures delivery, not the
bubble time that pacing adds. Latency: from producing a reply to Kafka to an overlay
receiving it. Memory per connection: the gateway's resident memory with the overlays
connected minus before, over N. Prints a table and one JSON line. Uses KAFKA_BOOTSTRAP
when set, else a throwaway local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_bootstrap, gateway_process, pct, rss_kib, until  # noqa: E402
from producers.samples import sample_reply  # noqa: E402
from stream.kafka_io import make_producer  # noqa: E402
from stream.settings import GatewaySettings  # noqa: E402
from stream.tokens import issue_token  # noqa: E402

MAX_OVERLAYS = 2000
MAX_SECONDS = 120


async def metric(port: int, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def overlay(url: str, sent_at: dict[str, float], latencies: list[float], repeats: list[str],
                  connected: asyncio.Event) -> None:
    seen: set[str] = set()
    async with connect(url, max_size=2**20) as ws:
        await ws.recv()  # hello
        connected.set()
        async for message in ws:
            frame = orjson.loads(message)
            if frame["type"] != "reply":
                continue
            now = time.perf_counter()
            reply_id = frame["reply"]["reply_id"]
            latencies.append((now - sent_at[reply_id]) * 1000)
            if reply_id in seen:
                repeats.append(reply_id)
            seen.add(reply_id)
            await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())


async def run(args: argparse.Namespace) -> dict:
    n, m = min(args.overlays, MAX_OVERLAYS), max(1, min(args.rooms, args.overlays))
    seconds = min(args.seconds, MAX_SECONDS)
    secret = secrets.token_hex(32)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    async with bench_bootstrap() as bootstrap, gateway_process(bootstrap, prefix, secret, client_queue="256") as (
        gateway, port
    ):
        base_kib = rss_kib(gateway.pid)
        rooms = [f"bench-room-{i}" for i in range(m)]
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        repeats: list[str] = []
        tasks = []
        for i in range(n):
            room = rooms[i % m]
            connected = asyncio.Event()
            url = f"ws://127.0.0.1:{port}/ws/{room}?token={issue_token(secret.encode(), room, 3600)}"
            tasks.append(asyncio.create_task(overlay(url, sent_at, latencies, repeats, connected)))
            await asyncio.wait_for(connected.wait(), 30)
        await until(lambda: _clients_are(port, n))
        connected_kib = rss_kib(gateway.pid)

        producer = make_producer(bootstrap, "bench-overlay")
        await producer.start()
        produced = 0
        per_room = {room: sum(1 for i in range(n) if rooms[i % m] == room) for room in rooms}
        expected = 0
        peak_kib = connected_kib
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < seconds:
                room = rooms[produced % m]
                reply = sample_reply(room, produced)
                sent_at[reply.reply_id] = time.perf_counter()
                await producer.send(GatewaySettings(topic_prefix=prefix).topics.replies, reply.to_json(),
                                    key=room.encode())
                produced += 1
                expected += per_room[room]
                if produced % 50 == 0:
                    peak_kib = max(peak_kib, rss_kib(gateway.pid))
                await asyncio.sleep(max(0.0, started + produced / args.rate - time.perf_counter()))
            await producer.flush()
        finally:
            await producer.stop()
        try:
            await until(lambda: _delivered(latencies, expected), timeout_s=30)
        except TimeoutError:
            pass
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "overlays": n, "rooms": m, "rate_per_s": args.rate, "seconds": seconds, "replies": produced,
        "deliveries": len(latencies), "expected_deliveries": expected,
        "repeated": len(repeats),
        "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99), "max_ms": round(max(latencies), 1) if latencies else None,
        "gateway_rss_mib": round(base_kib / 1024, 1),
        "kib_per_connection": round((connected_kib - base_kib) / n, 1),
        "gateway_peak_rss_mib": round(peak_kib / 1024, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


async def _clients_are(port: int, n: int) -> bool:
    return await metric(port, "idolstream_ws_clients") == n


async def _delivered(latencies: list[float], expected: int) -> bool:
    return len(latencies) >= expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overlays", type=int, default=200, help=f"overlay connections (at most {MAX_OVERLAYS})")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="replies per second, over all rooms")
    parser.add_argument("--seconds", type=float, default=20.0, help=f"how long to produce (at most {MAX_SECONDS})")
    result = asyncio.run(run(parser.parse_args()))
    print(f"{'overlays':>9} {'rooms':>6} {'replies':>8} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'KiB/conn':>9} {'RSS MiB':>8}")
    print(f"{result['overlays']:>9} {result['rooms']:>6} {result['replies']:>8} "
          f"{result['deliveries']:>5}/{result['expected_deliveries']:<5} {result['p50_ms']!s:>7} "
          f"{result['p99_ms']!s:>8} {result['kib_per_connection']:>9} {result['gateway_peak_rss_mib']:>8}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
