from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, CoordinationType

from stream.errors import LocalKafkaError

HERE = Path(__file__).parent
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j.properties"
KAFKA_VERSION = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text()).group(1)
# Partitions of the broker's __consumer_offsets topic: each holds the coordinator of some groups.
OFFSETS_TOPIC_PARTITIONS = 4


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def broker_answers_metadata(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker at `bootstrap` answers a real metadata (describe cluster) request."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except Exception:  # any failure here only means "not ready yet"
        return False
    finally:
        await admin.close()


def offsets_partition(group: str, partitions: int = OFFSETS_TOPIC_PARTITIONS) -> int:
    """The __consumer_offsets partition, and so the coordinator, the broker gives `group`.

    Kafka takes Java's `String.hashCode()` of the group id (over UTF-16 code units), masks
    the sign bit off and takes it modulo the partition count.
    """
    data = group.encode("utf-16-be")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


def probe_groups(partitions: int = OFFSETS_TOPIC_PARTITIONS) -> list[str]:
    """One group id per offsets partition: probing each one asks every group coordinator there is."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        name = f"idolstream-readiness-probe-{n}"
        found.setdefault(offsets_partition(name, partitions), name)
        n += 1
    return [found[p] for p in range(partitions)]


async def group_coordinators_available(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker answers metadata and FindCoordinator for a group on every offsets partition.

    A fresh broker creates __consumer_offsets on the first such request and elects its
    leaders a moment later; a consumer group that starts before that logs
    GroupCoordinatorNotAvailableError at ERROR level (and retries), which reads as broken.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        for group in probe_groups():
            await asyncio.wait_for(client.coordinator_lookup(CoordinationType.GROUP, group), timeout_s)
        return True
    except Exception:  # any failure here only means "not ready yet"
        return False
    finally:
        await client.close()


@dataclass
class LocalKafka:
    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # Where the jars are copied; several brokers (the tests') can share one copy.
    jars_root: Path | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()  # the broker's own paths must not depend on its cwd

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def jars_dir(self) -> Path:
        return (self.jars_root or self.home / "jars") / KAFKA_VERSION

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    # -- preparation --------------------------------------------------------------

    def _require(self, tool: str, why: str) -> str:
        path = shutil.which(tool)
        if path is None:
            raise LocalKafkaError(
                f"`{tool}` is not on PATH; {why}. Install it (Java 17+ and Maven 3.8+), "
                "or set KAFKA_BOOTSTRAP to use an existing cluster."
            )
        return path

    def ensure_jars(self) -> Path:
        """Copy the pinned broker jars from Maven (its local cache first) once."""
        done = self.jars_dir / ".complete"
        if done.exists():
            return self.jars_dir
        mvn = self._require("mvn", "it resolves the Kafka broker jars from Maven Central")
        self._require("java", "the Kafka broker runs on the JVM")
        tmp = self.jars_dir.with_name(self.jars_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalKafkaError(
                f"Maven could not resolve Kafka {KAFKA_VERSION} (exit {result.returncode}):\n"
                + (result.stdout + result.stderr)[-2000:]
            )
        (tmp / ".complete").write_text(KAFKA_VERSION + "\n")
        shutil.rmtree(self.jars_dir, ignore_errors=True)
        tmp.rename(self.jars_dir)
        return self.jars_dir

    def _server_properties(self) -> Path:
        path = self.home / "server.properties"
        path.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    f"offsets.topic.num.partitions={OFFSETS_TOPIC_PARTITIONS}",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    # A single local broker: no reason to wait for more members to join.
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "message.max.bytes=16777216",
                    "",
                ]
            )
        )
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        java = self._require("java", "the Kafka broker runs on the JVM")
        return [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{LOG4J}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", str(self.jars_dir / "*"),
            main, *args,
        ]

    def format_storage(self, properties: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            # "=" form: a cluster id may start with "-", which argparse would take for an option.
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={properties}"),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise LocalKafkaError(f"formatting {self.data_dir} failed:\n{(result.stdout + result.stderr)[-2000:]}")

    # -- lifecycle ----------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def _port_busy(self, port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def up(self, timeout_s: float = 90.0) -> str:
        """Start the broker (if not running); return its bootstrap address once consumer groups can join.

        The broker runs in a session of its own: a Ctrl-C in the terminal that started it
        reaches only the program that owns it, which stops its clients first and then the broker.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if self.pid() is None:
            for port in (self.port, self.controller_port):
                if self._port_busy(port):
                    raise LocalKafkaError(
                        f"port {port} is taken by another process; choose other ports "
                        "(--port/--controller-port) or point KAFKA_BOOTSTRAP at that broker"
                    )
            self.ensure_jars()
            properties = self._server_properties()
            self.format_storage(properties)
            out = open(self.logs_dir / "broker.out", "ab")
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(properties)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Its own session: it outlives `idolstream kafka up`, and a terminal's Ctrl-C
                # does not stop it under clients that are still connected.
                start_new_session=True,
            )
            out.close()
            self.pid_file.write_text(f"{proc.pid}\n")
        self.wait_ready(timeout_s)
        return self.bootstrap

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        # Refused connections are expected while the broker starts: keep aiokafka quiet meanwhile.
        aiokafka_log = logging.getLogger("aiokafka")
        saved_level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)
        try:
            while time.monotonic() < deadline:
                if self.pid() is None:
                    raise LocalKafkaError(f"the broker exited during start-up:\n{self.log_tail()}")
                if asyncio.run(group_coordinators_available(self.bootstrap)):
                    return
                time.sleep(0.5)  # a poll interval between readiness checks, not a guess at readiness
        finally:
            aiokafka_log.setLevel(saved_level)
        raise LocalKafkaError(
            f"the broker did not answer with a group coordinator within {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker; True when one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                finished = 0 if self._alive(pid) else pid
            if finished == pid or not self._alive(pid):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def status(self) -> dict:
        pid = self.pid()
        return {
            "kafka_version": KAFKA_VERSION,
            "bootstrap": self.bootstrap,
            "pid": pid,
            "running": pid is not None,
            "answering": pid is not None and asyncio.run(broker_answers_metadata(self.bootstrap)),
            "home": str(self.home),
        }

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for name in ("broker.out", "server.log"):
            path = self.logs_dir / name
            if path.exists():
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(chunks[-lines:]) or "(no broker log)"
