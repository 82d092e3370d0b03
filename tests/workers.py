"""Services as real processes (the fast tier by default), for tests that scale, stop or kill them.

Each worker runs `python -m stream.cli -v serve <service>` and its log is read line by
line as it comes, so a test waits on what the worker says (joined the group, was given
partitions, stopped) instead of guessing with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import PROJECT_ROOT
from tests.processes import service_env

ASSIGNED = re.compile(r"Setting newly assigned partitions (.*) for group")
PARTITION = re.compile(r"TopicPartition\(topic='([^']+)', partition=(\d+)\)")
JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\) with member_id (\S+)")


@dataclass(frozen=True)
class Assignment:
    at: float  # wall clock (time.time()) when the line was read
    partitions: frozenset[tuple[str, int]]


class WorkerProcess:
    """One `serve <service>` process; `lines` is its log so far, with the time each line was read."""

    def __init__(self, name: str, bootstrap: str, prefix: str, cwd: Path = PROJECT_ROOT, service: str = "fast-tier",
                 **settings: str) -> None:
        self.name = name
        self.service = service
        self.cwd = cwd  # relative settings and registry sources resolve against it
        self.env = service_env(bootstrap, prefix, **{key: str(value) for key, value in settings.items()})
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[tuple[float, str]] = []
        self.assignments: list[Assignment] = []
        self.member_id: str | None = None
        self.exited_at: float | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    async def start(self) -> WorkerProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream.cli", "-v", "serve", self.service, cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read(), name=f"log-{self.name}")
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            now = time.time()
            text = line.decode(errors="replace").rstrip()
            self.lines.append((now, text))
            if found := ASSIGNED.search(text):
                parts = frozenset((t, int(p)) for t, p in PARTITION.findall(found.group(1)))
                self.assignments.append(Assignment(now, parts))
            elif found := JOINED.search(text):
                self.member_id = found.group(2)
            async with self._changed:
                self._changed.notify_all()
        await self.process.wait()
        self.exited_at = time.time()
        async with self._changed:
            self._changed.notify_all()

    @property
    def exited(self) -> bool:
        return self._reader is not None and self._reader.done()

    def owned(self, topic: str) -> set[int]:
        """Partitions of `topic` this worker was last given (none once it has exited)."""
        if self.exited or not self.assignments:
            return set()
        return {p for t, p in self.assignments[-1].partitions if t == topic}

    def assigned_since(self, since: float) -> Assignment | None:
        return next((a for a in self.assignments if a.at >= since), None)

    async def wait_for(self, condition, timeout: float, what: str) -> None:
        """Until `condition()` holds, this worker's log grows, or it exits; bounded by `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: condition() or self.exited)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {what} within {timeout:.0f} s\n{self.tail()}") from None
        if not condition():
            raise AssertionError(f"{self.name} exited (rc {self.returncode}) before {what}\n{self.tail()}")

    async def wait_line(self, pattern: str, timeout: float) -> float:
        """When the first log line matching `pattern` was read."""
        regex = re.compile(pattern)

        def seen() -> float | None:
            return next((at for at, text in self.lines if regex.search(text)), None)

        await self.wait_for(lambda: seen() is not None, timeout, f"log line /{pattern}/")
        return seen()

    def signal(self, sig: signal.Signals) -> float:
        assert self.process is not None
        self.process.send_signal(sig)
        return time.time()

    async def wait_exit(self, timeout: float) -> int | None:
        await self.wait_for(lambda: self.exited, timeout, "exit")
        return self.returncode

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def tail(self, count: int = 40) -> str:
        return "\n".join(f"  {text}" for _, text in self.lines[-count:])

    async def close(self) -> None:
        """Kill the process if it still runs (end of test or a failure) and stop reading its log."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=30)
