"""The fans app as a real process (`idolstream serve fans`) for tests, with what they send it and read back."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time

import httpx
import orjson

from producers.client import build_submission
from stream.contracts import Feedback, UserRef, new_id, utcnow
from stream.kafka_io import make_producer
from stream.tokens import issue_operator_token
from tests.fans.test_profiles import answer
from tests.workers import WorkerProcess

CONSOLE_SECRET = "fans-console-secret-for-tests-0123456789"
LISTENING = r"fans app listening on http://[^:]+:(\d+)"
WAIT_S = 90.0


def operator_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_operator_token(CONSOLE_SECRET.encode(), 'ops', 600)}"}


class FansProcess:
    """One fans app process; `url` once it listens. Restart it with `start()` again after a stop or kill."""

    def __init__(self, bootstrap: str, prefix: str, **settings) -> None:
        self.bootstrap, self.prefix = bootstrap, prefix
        self.settings = {"fans_port": "0", "console_secret": CONSOLE_SECRET, "commit_interval_s": "0.5",
                         "tick_s": "0.5", **{k: str(v) for k, v in settings.items()}}
        self.worker: WorkerProcess | None = None
        self.url = ""
        self.runs = 0

    async def start(self) -> FansProcess:
        self.runs += 1
        self.worker = await WorkerProcess(f"fans-{self.runs}", self.bootstrap, self.prefix, service="fans",
                                          **self.settings).start()
        await self.worker.wait_line(LISTENING, WAIT_S)
        port = next(re.search(LISTENING, text).group(1) for _, text in self.worker.lines if re.search(LISTENING, text))
        self.url = f"http://127.0.0.1:{port}"
        await self.until(lambda: self.ready(), "ready")
        return self

    async def ready(self) -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.url}/readyz")).status_code == 200

    async def view(self, path: str):
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}{path}", headers=operator_headers())
        return response.json() if response.status_code == 200 else None

    async def until(self, check, what: str, timeout: float = WAIT_S):
        """Poll `check()` (async) until it returns something truthy; that value, or an AssertionError saying what."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                last = await check()
                if last:
                    return last
            if self.worker is not None and self.worker.exited:
                raise AssertionError(f"the fans app exited before {what}\n{self.worker.tail()}")
            await asyncio.sleep(0.2)  # poll interval of a condition wait
        tail = self.worker.tail() if self.worker else ""
        raise AssertionError(f"no {what} within {timeout:.0f} s (last: {last})\n{tail}")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        assert self.worker is not None
        self.worker.signal(sig)
        return await self.worker.wait_exit(60)


def submission(room: str, user: str, name: str, text: str | None = None, **fields):
    return build_submission(room=room, user_id=user, display_name=name, image_bytes=b"\x89PNG fake", mime="image/png",
                            text=text, **fields)


def reply_to(sub, text: str, model_id: str = "m", persona_version: str = "p1", tier: str = "fast"):
    return answer(sub, text).model_copy(update={"model_id": model_id, "persona_version": persona_version, "tier": tier})


def feedback(kind: str, reply, user: str = "fan9", feedback_id: str | None = None) -> Feedback:
    return Feedback(feedback_id=feedback_id or new_id(), kind=kind, reply_id=reply.reply_id, room=reply.room,
                    user=UserRef(id=user, display_name=user), at=utcnow())


async def produce(bootstrap: str, topic: str, records) -> None:
    """(key, value) pairs, or contracts keyed by their room."""
    producer = make_producer(bootstrap, "fans-test")
    await producer.start()
    try:
        for record in records:
            key, value = record if isinstance(record, tuple) else (record.room, record.to_json())
            await producer.send_and_wait(topic, value if isinstance(value, bytes) else orjson.dumps(value),
                                         key=key.encode() if isinstance(key, str) else key)
    finally:
        await producer.stop()
