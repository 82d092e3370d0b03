"""Services as real processes (`idolstream serve ...`), for tests that kill or restart them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def service_env(bootstrap: str, prefix: str, **settings: str) -> dict[str, str]:
    """The environment of a service on the test broker and topics; `settings` are IDOLSTREAM_ names."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "IDOLSTREAM_TOPIC_PREFIX": prefix,
        "IDOLSTREAM_GROUP_ID": f"{prefix}fast",
        "IDOLSTREAM_DEEP_GROUP_ID": f"{prefix}deep",
        "IDOLSTREAM_SESSION_TIMEOUT_MS": "6000",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        # Random weights say random things: a test that wants the persona checks turns them on.
        "IDOLSTREAM_CHECK_REPLIES": "false",
        **{f"IDOLSTREAM_{name.upper()}": value for name, value in settings.items()},
    }


def start_service(service: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`idolstream serve SERVICE` with its output in `log` (read it when an assertion fails)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "-v", "serve", service], cwd=PROJECT_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen, timeout_s: float = 60) -> int:
    """SIGTERM and wait; a process that does not stop in time is killed (and that is returned)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def registry_copy(project: Path) -> Path:
    """The project's model registry as `project`/config/models.json, its local sources made absolute.

    A project root of its own: what a test registers there never touches config/models.json,
    and the checkpoints built into var/ are still found.
    """
    raw = json.loads((PROJECT_ROOT / "config" / "models.json").read_text(encoding="utf-8"))
    for entry in raw["models"]:
        local = PROJECT_ROOT / entry["source"]
        if local.exists():
            entry["source"] = str(local)
    path = project / "config" / "models.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return path
