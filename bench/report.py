"""Reporting: medians of the rounds, ratios against the baselines, the printed tables,
and the machine the numbers were measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import subprocess
from collections import Counter as Tally
from typing import Any

from bench.driver import ROOT, Result, loadavg

# -- summaries -----------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


SUMMARY_FIELDS = (
    "events_per_s",
    "of_ideal",
    "cpu_ms_per_event",
    "cpu_util",
    "rss_start_mb",
    "rss_peak_mb",
    "fake_cpu_ms_per_event",
    "fake_cpu_util",
    "redis_cpu_ms_per_event",
    "others_cpu_util",
    "commands_per_event",
    "round_trips_per_event",
    "round_trips_excl_reads_per_event",
    "reads_per_event",
    "drain_s",
    "drained",
)


def summarise(results: list[Result]) -> dict[str, Any]:
    by_key: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        by_key.setdefault((result.spec["scenario"], result.variant), []).append(result)
    summary: dict[str, Any] = {}
    for (scenario, variant), group in by_key.items():
        good = [r for r in group if r.ok]
        entry: dict[str, Any] = {
            "runs": len(group),
            "ok": len(good),
            "events": group[0].spec["events"],
            "latency": group[0].spec["latency"],
            "concurrency": group[0].spec["concurrency"],
            "ideal_per_s": group[0].ideal_per_s,
        }
        for name in SUMMARY_FIELDS:
            entry[name] = median([getattr(r, name) for r in good])
        calls: Tally[str] = Tally()
        for r in good:
            calls.update(r.commandstats)
        per = sum(max(r.drained, 1) for r in good) or 1
        entry["calls_per_event"] = {k: round(v / per, 3) for k, v in calls.most_common()}
        summary.setdefault(scenario, {})[variant] = entry
    # Ratios measured side by side: worker over each baseline in the same round.
    for scenario, variants in summary.items():
        for variant, entry in variants.items():
            if not variant.startswith("worker"):
                continue
            if variant.startswith("worker@"):
                continue  # --against REV's code: the tree's worker is compared with it
            # worker/c64/p2 (two processes, 32 each) is compared with bare/c64
            rest = re.sub(r"/p\d+", "", variant.removeprefix("worker"))
            ratios = {}
            for twin in (v for v in variants if v.startswith("worker@")):
                if twin.split("/", 1)[-1] == variant.split("/", 1)[-1]:
                    pairs = _paired(results, scenario, variant, twin)
                    if pairs:
                        ratios[f"vs_{twin}"] = {
                            name: _median_ratio(pairs, name) for name in _RATIO_FIELDS
                        }
            for base in ("bare", "naive"):
                base_variant = base + (rest if base != "naive" else "")
                if scenario == "latency" and base == "naive":
                    base_variant = "naive"
                if base == "naive" and rest not in ("/c64", "/c256"):
                    continue
                pairs = _paired(results, scenario, variant, base_variant)
                if pairs:
                    ratios[f"vs_{base_variant}"] = {
                        name: _median_ratio(pairs, name) for name in _RATIO_FIELDS
                    }
            entry["ratios"] = ratios
    return summary


_RATIO_FIELDS = ("events_per_s", "cpu_ms_per_event", "rss_peak_mb", "round_trips_per_event")


def _median_ratio(pairs: list[tuple[Result, Result]], name: str) -> float | None:
    """The median over rounds of ``name`` of the worker over ``name`` of its baseline."""
    return median([getattr(w, name) / getattr(b, name) for w, b in pairs if getattr(b, name)])


def _paired(results: list[Result], scenario: str, a: str, b: str) -> list[tuple[Result, Result]]:
    rounds: dict[int, dict[str, Result]] = {}
    for r in results:
        if r.ok and r.spec["scenario"] == scenario and r.variant in (a, b):
            rounds.setdefault(r.round, {})[r.variant] = r
    return [(v[a], v[b]) for v in rounds.values() if a in v and b in v]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(entry: dict[str, Any], base: str, name: str) -> str:
    for key, value in entry.get("ratios", {}).items():
        if key.startswith(f"vs_{base}") and value.get(name) is not None:
            return f"{value[name]:.2f}x"
    return "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


# (column title, how to render it from a summary entry), per scenario.
_Column = tuple[str, Any]
_COMMON_HEAD: list[_Column] = [("events", lambda e: fmt(e["events"]))]
COLUMNS: dict[str, list[_Column]] = {
    "overhead": [
        *_COMMON_HEAD,
        ("ev/s", lambda e: fmt(e["events_per_s"])),
        ("CPU ms/ev", lambda e: fmt(e["cpu_ms_per_event"], 2)),
        ("CPU util", lambda e: fmt(e["cpu_util"], 2)),
        ("peak RSS MB", lambda e: fmt(e["rss_peak_mb"])),
        ("fake CPU ms/ev", lambda e: fmt(e["fake_cpu_ms_per_event"], 3)),
        ("redis CPU ms/ev", lambda e: fmt(e["redis_cpu_ms_per_event"], 3)),
        ("cmds/ev", lambda e: fmt(e["commands_per_event"], 2)),
        ("RT/ev", lambda e: fmt(e["round_trips_per_event"], 2)),
        ("RT/ev excl. reads", lambda e: fmt(e["round_trips_excl_reads_per_event"], 2)),
        ("others' CPU", lambda e: fmt(e["others_cpu_util"], 2)),
        ("runs ok", lambda e: f"{e['ok']}/{e['runs']}"),
        ("ev/s vs bare", lambda e: _ratio(e, "bare", "events_per_s")),
        ("ev/s vs naive", lambda e: _ratio(e, "naive", "events_per_s")),
        ("CPU/ev vs bare", lambda e: _ratio(e, "bare", "cpu_ms_per_event")),
        ("ev/s vs @REV", lambda e: _ratio(e, "worker@", "events_per_s")),
        ("CPU/ev vs @REV", lambda e: _ratio(e, "worker@", "cpu_ms_per_event")),
        ("RT/ev vs @REV", lambda e: _ratio(e, "worker@", "round_trips_per_event")),
    ],
    "latency": [
        *_COMMON_HEAD,
        ("ideal ev/s", lambda e: fmt(e["ideal_per_s"])),
        ("ev/s", lambda e: fmt(e["events_per_s"])),
        ("of ideal", lambda e: _pct(e["of_ideal"])),
        ("CPU ms/ev", lambda e: fmt(e["cpu_ms_per_event"], 2)),
        ("CPU util", lambda e: fmt(e["cpu_util"], 2)),
        ("RT/ev", lambda e: fmt(e["round_trips_per_event"], 2)),
        ("others' CPU", lambda e: fmt(e["others_cpu_util"], 2)),
        ("runs ok", lambda e: f"{e['ok']}/{e['runs']}"),
        ("ev/s vs bare", lambda e: _ratio(e, "bare", "events_per_s")),
        ("ev/s vs naive", lambda e: _ratio(e, "naive", "events_per_s")),
        ("ev/s vs @REV", lambda e: _ratio(e, "worker@", "events_per_s")),
    ],
    "memory": [
        *_COMMON_HEAD,
        ("drained", lambda e: fmt(e["drained"], 0)),
        ("ev/s", lambda e: fmt(e["events_per_s"])),
        ("RSS at first read MB", lambda e: fmt(e["rss_start_mb"])),
        ("peak RSS MB", lambda e: fmt(e["rss_peak_mb"])),
        ("CPU ms/ev", lambda e: fmt(e["cpu_ms_per_event"], 2)),
        ("others' CPU", lambda e: fmt(e["others_cpu_util"], 2)),
        ("runs ok", lambda e: f"{e['ok']}/{e['runs']}"),
        ("peak RSS vs bare", lambda e: _ratio(e, "bare", "rss_peak_mb")),
        ("peak RSS vs naive", lambda e: _ratio(e, "naive", "rss_peak_mb")),
    ],
}

COLUMNS["steady"] = COLUMNS["overhead"]  # the same figures, of a worker that keeps up


def render_tables(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    for scenario, variants in summary.items():
        columns = COLUMNS[scenario]
        lines.append(f"\n### {scenario}\n")
        lines.append("| variant | " + " | ".join(title for title, _ in columns) + " |")
        lines.append("| --- |" + " ---: |" * len(columns))
        for variant, entry in variants.items():
            cells = [render(entry) for _, render in columns]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        if scenario in ("overhead", "steady", "latency"):
            lines.append("\nRedis commands per event (`INFO commandstats`, all runs):\n")
            for variant, entry in variants.items():
                calls = ", ".join(
                    f"{name} {count:g}"
                    for name, count in entry["calls_per_event"].items()
                    if count >= 0.005
                )
                lines.append(f"- `{variant}`: {calls}")
    return "\n".join(lines) + "\n"


# -- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        memory = f"{int(handle.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    versions = {}
    for package in (
        "faststream",
        "redis",
        "groq",
        "aiohttp",
        "httpx",
        "pydantic",
        "structlog",
        "uvloop",
    ):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    code: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        code["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        code["uncommitted_in_app"] = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")[:-1]
    return {
        "code": code,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "packages": versions,
        "loadavg_at_start": loadavg(),
    }
