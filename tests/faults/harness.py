"""Real processes for fault tests: the worker as a user runs it, a fake Groq, checks from outside.

* ``RedisTarget``: the Redis a test's workers use (its URL and ``REDIS_MODE``);
* ``Workers``: starts ``WorkerProcess``es bound to one Redis and one fake Groq, with a
  module's default settings, and kills whatever it started at the end;
* ``FakeGroqProcess``: ``python -m tests.support.fake_groq``, stopped and restarted at will;
* ``events``, ``outcomes``, ``wait_until``: write events, read what became of them, wait.

Everything here is bounded: every wait has a deadline, every process is killed at the end.
The fixtures that put these together for a test are in ``tests/faults/conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import redis as sync_redis

from app.domain.keys import Keys
from tests.support.environment import without_settings
from tests.support.fake_groq import API_KEY
from tests.support.redis_server import free_port

__all__ = [
    "GROUP",
    "STREAM",
    "FakeGroqProcess",
    "RedisClient",
    "RedisTarget",
    "WorkerProcess",
    "Workers",
    "events",
    "outcomes",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"

# A test's synchronous Redis client: ``redis.Redis``, or ``redis.RedisCluster`` in the cluster
# faults. Its replies are bytes (no decode_responses), which redis-py's annotations (unions of
# every decoding; RedisCluster's methods untyped) cannot say, so tests read them as Any.
RedisClient: TypeAlias = Any


@dataclass(frozen=True)
class RedisTarget:
    """The Redis a fault test's workers use: ``REDIS_URL`` and ``REDIS_MODE``."""

    url: str
    mode: str = "standalone"  # or "cluster": the URL names one seed node

    def connect(self) -> RedisClient:
        """A client of this Redis for the test's own checks (replies as bytes)."""
        if self.mode == "cluster":
            return sync_redis.RedisCluster.from_url(self.url)
        return sync_redis.Redis.from_url(self.url)


def wait_until(predicate: Any, *, within: float, step: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


class FakeGroqProcess:
    """``python -m tests.support.fake_groq`` on a fixed port: can be stopped and restarted."""

    def __init__(self, *, latency: float = 0.0, rpm: int = 0, tpm: int = 0) -> None:
        self.port = free_port()
        self.latency = latency
        self.limits = ["--rpm", str(rpm), "--tpm", str(tpm)]  # enforced like Groq's (0: none)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGroqProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.fake_groq",
                "--port",
                str(self.port),
                "--latency",
                str(self.latency),
                "--record",
                *self.limits,
            ],
            cwd=ROOT,
            env=without_settings(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, within=15, what="the fake Groq to listen")
        return self

    def _answers(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> FakeGroqProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._get("/_control/stats")  # type: ignore[no-any-return]

    def agents_requested(self) -> list[str]:
        """The agent_name of every request received, in order (events are told apart by it)."""
        return self._get("/_control/agents")  # type: ignore[no-any-return]

    def requests(self) -> list[dict[str, Any]]:
        """The model and messages of every request received, in order."""
        return self._get("/_control/requests")  # type: ignore[no-any-return]

    def batches(self, **payload: Any) -> dict[str, Any]:
        """Set the fake Batch API's behaviour (``hold``, ``fail_ids``, ``expire_next``), if
        any is given, and return its state (uploads, batches, every custom_id submitted)."""
        if payload:
            self._post("/_control/batches", payload)
        return self._get("/_control/batches")  # type: ignore[no-any-return]

    def script(self, **payload: Any) -> None:
        self._post("/_control/script", payload)

    def _post(self, path: str, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5):
            pass


class WorkerProcess:
    """``faststream run app:app`` in a subprocess, its output in a log file.

    Its environment is this process's without any setting (``without_settings``), plus the
    settings given here: a setting exported in the shell never reaches the worker."""

    ready_line = "consumer_group_ready"  # the log line ``start`` waits for
    ready_what = "the worker to start"

    def __init__(self, redis_url: str, groq_url: str, *, worker_id: str, **env: Any) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix=f"worker-{worker_id}-", suffix=".log")[1])
        self.env = {
            **without_settings(os.environ),
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_url,
            "GROQ_BASE_URL": groq_url,
            "GROQ_API_KEY": API_KEY,
            "LLM_PROVIDER": "groq",
            "WORKER_ID": worker_id,
            "METRICS_PORT": "0",
            "LOG_FORMAT": "json",
            "GROQ_BACKOFF_BASE_SECONDS": "0.05",
            "GROQ_BACKOFF_MAX_SECONDS": "0.5",
            "READ_BLOCK_MS": "200",
            **{key.upper(): str(value) for key, value in env.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "faststream"), "run", "app:app"]
            if (ROOT / ".venv" / "bin" / "faststream").exists()
            else [sys.executable, "-m", "faststream", "run", "app:app"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: self.ready_line in self.log() or self.process.poll() is not None,
            within=30,
            what=self.ready_what,
        )
        assert self.process.poll() is None, f"worker exited at start:\n{self.log()[-3000:]}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def freeze(self) -> None:
        """SIGSTOP: the process runs no more code (what it already sent is still answered)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``: it carries on where it stopped."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, in-flight work is simply gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, *, within: float = 60) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=within)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Workers:
    """The worker processes of one test, bound to its Redis and its fake Groq.

    ``start(worker_id, **settings)`` starts one with ``defaults`` (a module's
    ``WORKER_ENV``) overridden by ``settings``; every worker started is killed at the end
    (``close``, or leaving a ``with`` block), whether its start succeeded or not."""

    def __init__(
        self, redis: RedisTarget, fake: FakeGroqProcess, defaults: Mapping[str, Any] | None = None
    ) -> None:
        self.redis = redis
        self.fake = fake
        self.defaults = dict(defaults or {})
        self.started: list[WorkerProcess] = []

    def start(self, worker_id: str, **settings: Any) -> WorkerProcess:
        chosen = {**self.defaults, **settings}
        if self.redis.mode == "cluster":  # the scheduler does not run in a cluster yet
            chosen.setdefault("event_order", "fifo")
        worker = WorkerProcess(
            self.redis.url,
            self.fake.base_url,
            worker_id=worker_id,
            redis_mode=self.redis.mode,
            **chosen,
        )
        self.started.append(worker)  # before its start: a start that hangs is killed too
        return worker.start()

    def close(self) -> None:
        for worker in self.started:
            worker.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def events(
    client: RedisClient,
    count: int,
    *,
    start: int = 0,
    prefix: str = "evt",
    tenant: str = "acme",
    severity: str = "low",
) -> list[str]:
    """XADD ``count`` valid events in the gateway's wire format; returns their event ids."""
    ids = []
    pipe = client.pipeline(transaction=False)
    for n in range(start, start + count):
        event_id = f"{prefix}-{n}"
        ids.append(event_id)
        pipe.xadd(
            STREAM,
            {
                "payload": json.dumps(
                    {
                        "event_id": event_id,
                        "tenant_id": tenant,
                        "agent_id": "agent-a",
                        "agent_name": event_id,  # the fake Groq logs it: one name per event
                        "tool_name": "shell.exec",
                        "decision": "deny",
                        "severity": severity,
                        "timestamp": 1_795_573_200 + n,
                    }
                )
            },
        )
    pipe.execute()
    return ids


def outcomes(client: RedisClient, event_ids: list[str]) -> dict[str, Any]:
    """What became of each event, read from Redis only."""
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.exists(f"acp:groq:insight:{event_id}")
    insights = {
        event_id for event_id, exists in zip(event_ids, pipe.execute(), strict=True) if exists
    }
    letters = [json.loads(x) for x in client.lrange("acp:groq:dlq", 0, -1)]
    try:
        pending = client.xpending(STREAM, GROUP)["pending"]
    except sync_redis.ResponseError:  # no group (yet)
        pending = None
    return {
        "insights": insights,
        "dead": [letter.get("event_id") for letter in letters],
        "pending": pending,  # entries of the stream delivered and not acknowledged
        "jobs": client.hlen(Keys.SCHED_JOBS),  # events in the scheduler, waiting or running
        "running": client.zcard(Keys.SCHED_RUNNING),  # of those, handed to a worker's slot
        "letters": letters,
    }
