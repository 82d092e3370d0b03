"""The README's main job, end to end: `idolstream demo --items N --exit` on the session's broker,
and `idolstream demo` with a broker of its own, stopped by Ctrl-C as from a terminal."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import orjson
import pytest

from stream.local_kafka import find_free_port
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.kafka


# The demo model is built once by the session (minutes on a clean checkout), not inside the demo's own timeout.
@pytest.mark.timeout(900)
def test_the_demo_answers_every_fresh_item_escalates_some_and_sheds_the_replays(kafka_bootstrap, topic_prefix, demo_checkpoint):
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "IDOLSTREAM_TOPIC_PREFIX": topic_prefix,
        "IDOLSTREAM_GROUP_ID": f"{topic_prefix}fast",
        "IDOLSTREAM_DEEP_GROUP_ID": f"{topic_prefix}deep",
        "IDOLSTREAM_DRAW_GROUP_ID": f"{topic_prefix}draw",
        "IDOLSTREAM_PORT": "0",
        "IDOLSTREAM_TOPIC_PARTITIONS": "2",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--items", "20", "--exit", "--timeout", "240"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=300,
    )
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output + done.stderr.decode(errors="replace")[-3000:]
    summary = orjson.loads(output.strip().splitlines()[-1])
    assert summary["items"] == 20 and summary["shed"] == 2  # items 10 and 20 are replays from a bot's backlog
    assert summary["replied"] == 18 and summary["dead_lettered"] == 0
    assert set(summary["by_tier"]) == {"fast", "deep", "draw", "fallback"}
    assert sum(summary["by_tier"].values()) == 18
    assert summary["by_tier"]["deep"] >= 1, "the sample traffic holds items that escalate"
    assert "holding line" in output, "escalated items show a holding line first"
    # Items 7 and 14 ask her to draw: her line at once, then the draw tier's picture. (The tiny model
    # may also tag [draw] on a fan's "I drew this for you!": a draw_verdict, drawn too.)
    assert summary["by_tier"]["draw"] == summary["pictures"] >= 2, output
    assert output.count("(holding line: draw_request)") == 2 and "she drew a picture" in output, output
    assert summary["models"]["fast"] == "demo-qwen3vl"
    # The demo model sees: its own answers name the colour of the pictures (held out from its training).
    assert summary["colour_named"] >= 0.9 * summary["by_tier"]["fast"], output
    # The fans app runs beside it and the tiers remember fans: names come round again, and
    # she welcomes some of them back (3 when measured; none could be before this memory).
    assert summary["welcomed_back"] >= 1, output


STARTUP_BOUND_S = 300  # a fresh broker, two models and the first replies, on a busy machine
STOP_BOUND_S = 30  # what a Ctrl-C may take, process exit included


def _read_into(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # the end of the output


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped already
    except FileNotFoundError:
        return False


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(900)
def test_ctrl_c_stops_the_services_then_the_demos_own_broker_without_an_error(tmp_path, demo_checkpoint):
    home = tmp_path / "home"
    jars = PROJECT_ROOT / "var" / "kafka" / "jars"  # the broker jars the suite resolves once
    jars.mkdir(parents=True, exist_ok=True)
    (home / "kafka").mkdir(parents=True)
    (home / "kafka" / "jars").symlink_to(jars, target_is_directory=True)
    kafka_port = find_free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"},  # the demo starts its own broker
        "IDOLSTREAM_HOME": str(home),
        "IDOLSTREAM_LOCAL_KAFKA_PORT": str(kafka_port),
        "IDOLSTREAM_LOCAL_KAFKA_CONTROLLER_PORT": str(find_free_port()),
        "IDOLSTREAM_PORT": "0",
        "HF_HUB_OFFLINE": "1",
    }
    # Its own process group, as a terminal's foreground job; the Ctrl-C goes to the whole group.
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "demo", "--items", "3", "--rooms", "1"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_into, args=(demo.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    broker_pid = None
    try:
        deadline = time.monotonic() + STARTUP_BOUND_S
        while not any("demo running" in line for line in output):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "the demo ended before serving:\n" + "".join(output)[-3000:]
            output.append(line)
        broker_pid = int((home / "kafka" / "broker.pid").read_text())
        assert _alive(broker_pid) and _accepts(kafka_port)

        stop_sent = time.monotonic()
        os.killpg(demo.pid, signal.SIGINT)
        returncode = demo.wait(timeout=STOP_BOUND_S)
        stop_took = time.monotonic() - stop_sent
        while (line := lines.get(timeout=5)) is not None:  # the rest of the output, up to its end
            output.append(line)
        text = "".join(output)

        assert returncode == 130, text[-3000:]  # 128 + SIGINT: a job stopped by Ctrl-C, as shells report it
        assert [line for line in output if "ERROR" in line] == [], text[-3000:]
        assert stop_took < STOP_BOUND_S
        assert "the local broker is stopped" in text
        assert not _alive(broker_pid) and not _accepts(kafka_port), "the demo's broker outlived it"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        if broker_pid is not None and _alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
