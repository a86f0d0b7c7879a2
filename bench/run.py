"""The throughput, latency, memory and Redis-cost benchmark of the worker against two baselines.

``.venv/bin/python -m bench [--quick] [--runs N] [--scenario overhead|latency|memory|steady|all
|soak|flood] [--impl worker,bare,naive] [--profile] [--json FILE]``

For every measurement: a private ``redis-server`` (no persistence) and a lean loopback fake
Groq (``bench.lean_groq``) are started, N events are pre-loaded in the gateway's wire format
(pipelined ``XADD acp:groq_queue * payload <json>``), Redis's statistics are reset
(``CONFIG RESETSTAT``), and the implementation is started as a user would start it:

* ``worker``: ``faststream run app:app`` (the worker under test, unchanged);
* ``bare``: ``python -m bench.baseline_bare`` (redis-py + groq SDK, no framework);
* ``naive``: ``faststream run bench.baseline_faststream:app`` (the docs-style FastStream app).

The drain is timed from the first read (the first ``XINFO GROUPS`` poll, every 5 ms, that
shows ``entries-read`` > 0) to the group settled (lag 0, nothing pending, nothing left in
the scheduler; polled every 50 ms). The ``steady`` scenario writes its events while the
worker runs, at ``--arrival-rate`` a second (under the worker's capacity: no backlog), so
its figure is the cost per event of a worker that keeps up, not how fast it drains. Then
the harness records the process's CPU (``/proc/<pid>/stat``, user+sys, counted from the
first read), its peak RSS (``VmHWM``), the fake's and redis-server's CPU, the
machine's CPU used by other processes meanwhile (``/proc/stat``), ``INFO commandstats`` and
the round trips (``total_writes_processed``: redis-server's reply writes; one per request or
pipeline or MULTI/EXEC when a client waits for each reply before sending more, as redis-py
does), less the harness's own polls. Every insight key is counted (``SCAN``), the DLQ must be
empty and the fake must have had exactly one model call per event.

Every process is killed at the end of its measurement, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import prompt_scrub
from bench.driver import RESULTS, ROOT, Result, loadavg, measure
from bench.report import machine, render_tables, summarise
from bench.scenarios import Spec, scenario_specs

# -- main -----------------------------------------------------------------------------------


def measure_all(
    args: argparse.Namespace,
    scenarios: list[str],
    impls: list[str],
    runs: int,
    logs_dir: Path,
    code_dir: Path = ROOT,
    other_code: Path | None = None,
) -> tuple[list[Result], dict[str, str]]:
    """Every round of every scenario, then the profiles; printed as they come."""
    results: list[Result] = []
    began = time.monotonic()
    for round_no in range(1, runs + 1):
        for scenario in scenarios:
            for spec in scenario_specs(scenario, impls, args.quick, args):
                if spec.extra and round_no > 1 and not args.extras_every_round:
                    continue
                code = other_code if spec.code and other_code is not None else code_dir
                result = measure(spec, round_no, logs_dir, args.keep_logs, code)
                results.append(result)
                status = "ok" if result.ok else f"FAILED: {result.error}"
                extra = f" {result.of_ideal * 100:.1f}% of ideal" if result.of_ideal else ""
                print(
                    f"[{time.monotonic() - began:6.0f}s] r{round_no} {scenario:8} "
                    f"{spec.variant:24} "
                    f"{result.drained:>7} ev {result.events_per_s:>8.1f} ev/s{extra} "
                    f"cpu {result.cpu_ms_per_event:.2f} ms/ev rss {result.rss_peak_mb:.0f} MB "
                    f"rt {result.round_trips_per_event:.2f}/ev fake {result.fake_cpu_util:.2f} "
                    f"others {result.others_cpu_util:.2f} load {result.loadavg} {status}",
                    flush=True,
                )
    profiles: dict[str, str] = {}
    if args.profile:
        from bench.profile_summary import summarise_profile

        n = args.events or (1000 if args.quick else 3000)
        for impl in args.profile_impl.split(","):
            spec = Spec("overhead", impl.strip(), n, 0.0, 64, profile=True, fake=args.fake)
            result = measure(spec, 0, logs_dir, args.keep_logs, code_dir)
            print(
                f"profile run of {impl}: {result.events_per_s} ev/s "
                f"{result.error or ''} -> {result.profile}"
            )
            results.append(result)
            if result.profile and (ROOT / result.profile).exists():
                profiles[impl] = summarise_profile(ROOT / result.profile)
                print(profiles[impl])

    return results, profiles


def snapshot_code(stamp: str, revision: str | None = None) -> tuple[Path, str]:
    """Copy ``app/`` aside, so that every run of this benchmark measures the same code:
    the tree's, or that of git ``revision`` (``--against``)."""
    target = RESULTS / f"snapshot-{stamp}{'-' + revision if revision else ''}"
    if revision is None:
        shutil.copytree(ROOT / "app", target / "app", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        target.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "app"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    digest = hashlib.sha256()
    for path in sorted((target / "app").rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(path.read_bytes())
    return target, digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if _requested("soak", given):  # its own options and report: see bench/soak.py
        from bench import soak

        return soak.main(_without_scenario(given))
    if _requested("flood", given):  # its own options and report: see bench/flood.py
        from bench import flood

        return flood.main(_without_scenario(given))
    if "--inbound" in given or any(arg.startswith("--inbound=") for arg in given):
        from bench import kafka  # the Kafka inbound beside the Redis one: bench/kafka.py

        return kafka.main(given)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        default="all",
        help="overhead, latency, memory, steady (no backlog: a steady arrival rate) or all "
        "(= overhead + latency); comma-separated; "
        "or soak (python -m bench.soak: --minutes N and its other options); or flood "
        "(bench/flood.py: urgent events behind a flood, priority against fifo)",
    )
    parser.add_argument(
        "--impl", default="worker,bare,naive", help="comma-separated: worker, bare, naive"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="run the worker as `faststream run app:app --workers N`, the concurrency split "
        "between the processes (CPU and memory are the sums over them)",
    )
    parser.add_argument(
        "--redis-mode",
        choices=("standalone", "cluster"),
        default="standalone",
        help="cluster: the worker with REDIS_MODE=cluster on a private three-primary Redis "
        "Cluster (Redis figures summed over its nodes; --impl worker only)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small event counts, one round, no extra variants"
    )
    parser.add_argument(
        "--events", type=int, default=0, help="override the event count (overhead, memory)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.25, help="model latency of the latency scenario (s)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=12.0,
        help="latency runs: events = ideal rate x this, at most --latency-max-events",
    )
    parser.add_argument(
        "--latency-max-events",
        type=int,
        default=3000,
        help="latency runs: the most events (a CPU-bound run drains slower than ideal)",
    )
    parser.add_argument(
        "--memory-seconds", type=float, default=60.0, help="memory runs: draining time measured"
    )
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=500.0,
        help="steady runs: events written per second while the worker runs (under its "
        "capacity: no backlog)",
    )
    parser.add_argument(
        "--extras-every-round",
        action="store_true",
        help="measure the side variants (WARNING logs, httpx) in every round, not only the first",
    )
    parser.add_argument(
        "--fake",
        choices=("lean", "stock"),
        default="lean",
        help="lean: bench.lean_groq; stock: tests.support.fake_groq",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the worker (py-spy) in one overhead run",
    )
    parser.add_argument(
        "--profile-impl",
        default="worker",
        help="with --profile: which implementations to profile (comma-separated)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default bench/results/<time>.json)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep every implementation's log")
    parser.add_argument(
        "--otel",
        action="store_true",
        help="beside each worker run, the same with tracing on (every event sampled, OTLP/HTTP "
        "to a loopback sink that drops what it gets)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also measure the worker as it was at git revision REV, each measurement of "
        "the worker next to its twin on REV's code, in every round (before and after a "
        "change, in one run)",
    )
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the worker from the tree as it is (default: from a copy of app/ taken at start)",
    )
    args = parser.parse_args(argv)
    if args.redis_mode == "cluster" and args.impl != "worker":
        parser.error("--redis-mode cluster measures the worker only: add --impl worker")

    scenarios = ["overhead", "latency"] if args.scenario == "all" else args.scenario.split(",")
    if "redis" in scenarios:  # the Redis cost is measured in every run; shown with overhead
        scenarios = ["overhead" if s == "redis" else s for s in scenarios]
    impls = [name.strip() for name in args.impl.split(",") if name.strip()]
    runs = 1 if args.quick and args.runs == 3 else args.runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs_dir = Path(tempfile.mkdtemp(prefix="logs-", dir=RESULTS))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.json or RESULTS / f"bench-{stamp}.json"
    info = machine()
    # Where the implementations import ``app`` from: a copy of the worker's code taken now
    # (others may edit the tree meanwhile), or the tree itself (--no-snapshot).
    code_dir = ROOT
    if not args.no_snapshot:
        code_dir, digest = snapshot_code(stamp)
        info["code"]["app_snapshot_sha256"] = digest
    print(
        f"machine: {info['nproc']} cores, {info['cpu_model']}, {info['memory']}, "
        f"load {info['loadavg_at_start']}",
        flush=True,
    )

    other_code = None
    if args.against:
        args.against = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.against],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        other_code, other_digest = snapshot_code(stamp, args.against)
        info["code"]["against"] = {"revision": args.against, "app_sha256": other_digest}
    try:
        results, profiles = measure_all(
            args, scenarios, impls, runs, logs_dir, code_dir, other_code
        )
    finally:
        for path in (code_dir, other_code):
            if path is not None and path != ROOT:
                shutil.rmtree(path, ignore_errors=True)
    summary = summarise([r for r in results if r.round > 0])
    scrub = prompt_scrub.measure()
    payload = {
        "machine": info,
        "loadavg_at_end": loadavg(),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "summary": summary,
        "prompt_scrub_us_per_event": scrub,
        "profiles": profiles,
        "results": [asdict(r) for r in results],
    }
    out.write_text(json.dumps(payload, indent=2))
    tables = render_tables(summary)
    out.with_suffix(".md").write_text(tables)
    print(tables)
    print(prompt_scrub.render(scrub))
    print(f"results: {out} (tables: {out.with_suffix('.md')})")
    with contextlib.suppress(OSError):
        logs_dir.rmdir()  # empty unless a log was kept
    if logs_dir.exists():
        print(f"logs kept (failed measurements, or --keep-logs): {logs_dir}")
    return 0 if all(r.ok for r in results) else 1


def _requested(scenario: str, argv: list[str]) -> bool:
    return f"--scenario={scenario}" in argv or any(
        a == "--scenario" and b == scenario for a, b in itertools.pairwise(argv)
    )


def _without_scenario(argv: list[str]) -> list[str]:
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--scenario":
            skip = True
        elif not arg.startswith("--scenario="):
            rest.append(arg)
    return rest
