"""Overlay gateway soak: rounds of overlays connecting, getting a reply and closing.

    .venv/bin/python bench/gateway_soak.py [--rounds 16] [--overlays 500] [--rooms 50] [--seconds 240]
                                           [--same-rooms] [--history-max-age-s S]

Starts `idolstream serve gateway` as its own process (so its memory is its own) on
loopback. Each round connects `--overlays` websocket overlays spread over `--rooms` rooms
(new room names every round unless `--same-rooms`: rooms come and go over a gateway's
life), produces one reply per room, waits until every overlay has received and acked it,
then closes every overlay: three in four with a close handshake, one in four by dropping
the TCP connection (a browser tab killed). After each round it prints the gateway's
resident memory with the overlays connected and after they closed, how long the
`idolstream_ws_clients` gauge took to read 0, the gateway's open file descriptors, how
many series its /metrics page has and how many rooms it remembers
(`idolstream_ws_rooms_held`; a room nobody watches goes after `--history-max-age-s` of
quiet: the gateway's `history_max_age_s`, 900 s unless set). Rounds stop at `--rounds`
or `--seconds`, whichever comes first. Prints a table and one JSON line. Uses
KAFKA_BOOTSTRAP when set, else a throwaway local broker.
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
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_bootstrap, gateway_process, rss_kib, until  # noqa: E402
from producers.samples import sample_reply  # noqa: E402
from stream.kafka_io import make_producer  # noqa: E402
from stream.settings import GatewaySettings  # noqa: E402
from stream.tokens import issue_token  # noqa: E402

MAX_OVERLAYS = 2000
MAX_ROUNDS = 200
MAX_SECONDS = 600
CLOSED_WAIT_S = 30.0  # how long a round waits for the clients gauge to read 0
CONNECTING_AT_ONCE = 64  # opening handshakes in flight, so the client side does not time out


async def scrape(port: int) -> dict[str, float]:
    """Every sample of the gateway's /metrics page: 'name{labels}' -> value."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def overlay(url: str, replies: int, gate: asyncio.Semaphore, connected: asyncio.Event,
                  done: asyncio.Event, leave: asyncio.Event, abort: bool) -> None:
    """One overlay: connect, ack `replies` replies, then leave when told (close or drop)."""
    async with gate:
        ws: ClientConnection = await connect(url, max_size=2**20, open_timeout=60)
    try:
        assert orjson.loads(await ws.recv())["type"] == "hello"
        connected.set()
        got = 0
        while got < replies:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "reply":
                got += 1
                await ws.send(orjson.dumps({"type": "ack", "cursor": frame["cursor"]}).decode())
        done.set()
        await leave.wait()
    finally:
        if abort:
            ws.transport.abort()  # no close frame: the peer just vanishes
        else:
            await ws.close()


async def one_round(n: int, rooms: list[str], port: int, secret: str, producer, topic: str,
                    seed: int) -> tuple[float, float]:
    """Connect, deliver, close; (seconds to connect and deliver, seconds until the gauge read 0)."""
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    leave = asyncio.Event()
    tokens = {room: issue_token(secret.encode(), room, 3600) for room in rooms}
    connected = [asyncio.Event() for _ in range(n)]
    done = [asyncio.Event() for _ in range(n)]
    started = time.perf_counter()
    tasks = []
    for i in range(n):
        room = rooms[i % len(rooms)]
        url = f"ws://127.0.0.1:{port}/ws/{room}?token={tokens[room]}"
        tasks.append(asyncio.create_task(overlay(url, 1, gate, connected[i], done[i], leave, abort=i % 4 == 3)))
    try:
        async with asyncio.timeout(120):
            await asyncio.gather(*(event.wait() for event in connected))
        for k, room in enumerate(rooms):
            # A new item id every round: the gateway drops a second answer to the same item.
            await producer.send(topic, sample_reply(room, seed + k).to_json(), key=room.encode())
        await producer.flush()
        async with asyncio.timeout(120):
            await asyncio.gather(*(event.wait() for event in done))
        delivered_s = time.perf_counter() - started
    finally:
        leave.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    if failed := [r for r in results if isinstance(r, BaseException)]:
        raise RuntimeError(f"{len(failed)} overlays failed, first: {failed[0]!r}")
    closed_at = time.perf_counter()

    async def gauge_zero() -> bool:
        return (await scrape(port)).get("idolstream_ws_clients") == 0

    await until(gauge_zero, timeout_s=CLOSED_WAIT_S)
    return delivered_s, time.perf_counter() - closed_at


async def run(args: argparse.Namespace) -> dict:
    n = min(args.overlays, MAX_OVERLAYS)
    m = max(1, min(args.rooms, n))
    max_rounds, max_seconds = min(args.rounds, MAX_ROUNDS), min(args.seconds, MAX_SECONDS)
    secret = secrets.token_hex(32)
    prefix = f"soak{uuid.uuid4().hex[:8]}."
    topic = GatewaySettings(topic_prefix=prefix).topics.replies
    rows = []
    async with bench_bootstrap() as bootstrap, gateway_process(
            bootstrap, prefix, secret, history_max_age_s=args.history_max_age_s) as (gateway, port):
        base_kib = rss_kib(gateway.pid)
        base_fds = open_fds(gateway.pid)
        producer = make_producer(bootstrap, "bench-soak")
        await producer.start()
        started = time.perf_counter()
        try:
            for r in range(max_rounds):
                if time.perf_counter() - started > max_seconds:
                    break
                rooms = [f"soak-{'room' if args.same_rooms else r}-{i}" for i in range(m)]
                peak = [0]
                sampler = asyncio.create_task(_sample_rss(gateway.pid, peak))
                try:
                    delivered_s, zero_s = await one_round(n, rooms, port, secret, producer, topic, seed=r * m)
                finally:
                    sampler.cancel()
                samples = await scrape(port)
                rows.append({
                    "round": r + 1, "cycles": (r + 1) * n,
                    "connected_rss_mib": round(peak[0] / 1024, 1),
                    "closed_rss_mib": round(rss_kib(gateway.pid) / 1024, 1),
                    "gauge_zero_s": round(zero_s, 2), "round_s": round(delivered_s, 1),
                    "fds": open_fds(gateway.pid), "series": len(samples),
                    "rooms_held": samples.get("idolstream_ws_rooms_held"),
                })
                _print_row(rows[-1])
        finally:
            await producer.stop()
    return {
        "overlays_per_round": n, "rooms_per_round": m, "fresh_rooms": not args.same_rooms, "rounds": len(rows),
        "history_max_age_s": args.history_max_age_s,
        "cycles": len(rows) * n, "idle_rss_mib": round(base_kib / 1024, 1), "idle_fds": base_fds,
        "rounds_detail": rows, "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


async def _sample_rss(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], rss_kib(pid))
        await asyncio.sleep(0.05)


HEADER = (f"{'round':>5} {'cycles':>7} {'RSS up MiB':>11} {'RSS closed MiB':>15} {'gauge 0 s':>10} {'fds':>5} "
          f"{'series':>7} {'rooms held':>11}")


def _print_row(row: dict) -> None:
    if row["round"] == 1:
        print(HEADER)
    print(f"{row['round']:>5} {row['cycles']:>7} {row['connected_rss_mib']:>11} {row['closed_rss_mib']:>15} "
          f"{row['gauge_zero_s']:>10} {row['fds']:>5} {row['series']:>7} {_held(row['rooms_held']):>11}", flush=True)


def _held(value: float | None) -> str:
    return "-" if value is None else str(int(value))  # "-": a gateway without the gauge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=16, help=f"rounds of connect/close (at most {MAX_ROUNDS})")
    parser.add_argument("--overlays", type=int, default=500, help=f"overlays per round (at most {MAX_OVERLAYS})")
    parser.add_argument("--rooms", type=int, default=50, help="rooms per round")
    parser.add_argument("--same-rooms", action="store_true", help="every round uses the same room names")
    parser.add_argument("--history-max-age-s", type=float, default=None,
                        help="the gateway's history window, after which a quiet room nobody watches is forgotten")
    parser.add_argument("--seconds", type=float, default=240.0, help=f"stop starting rounds after this (at most {MAX_SECONDS})")
    result = asyncio.run(run(parser.parse_args()))
    print(f"idle: {result['idle_rss_mib']} MiB, {result['idle_fds']} fds; {result['cycles']} connect/close cycles "
          f"in {result['seconds']} s on {result['machine']}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
