"""CPU per event of building the prompt, with and without scrubbing.

``python -m bench.prompt_scrub [--events 2000] [--repeats 5]`` (``python -m bench`` runs it
too, after its scenarios, and records the figures in its JSON).

Each variant builds the prompt of every event of a set, ``--repeats`` times; the figure is
the median over the repeats of the process's CPU time (``time.process_time``) divided by
the events. The sets:

* ``bench``: the benchmark's own events (``bench.common.event_payload``: two findings,
  a flag, nothing to mask), what the overhead scenario sends;
* ``secrets``: the same events with one row of the test suite's secret table
  (``tests/support/secret_table.py``) in the first finding's detail, made unique per event
  (short strings' scrubbed forms are cached; this set pays the full cost of one detail);
* ``maximal``: the largest valid event (100 findings of 2,000 characters, 100 flags of
  256), 200 of them: the worst case the caps and the ceiling bound.

Variants: ``unscrubbed`` is the prompt as built before scrubbing existed (the allow-listed
fields as JSON), for the difference; ``scrubbed`` is ``build_insight_prompt`` with
``PROMPT_REDACT_PII=true`` (the default), ``credentials only`` with it false.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from app.domain.events import AuditEvent
from app.domain.prompt import SYSTEM_PROMPT, build_insight_prompt, prompt_fields
from bench.common import event_payload
from tests.support.secret_table import ROWS

__all__ = ["main", "measure", "render"]


def _unscrubbed(event: AuditEvent) -> tuple[str, str]:
    facts = json.dumps(prompt_fields(event), ensure_ascii=False, separators=(",", ":"))
    return SYSTEM_PROMPT, f"Gateway decision (JSON):\n{facts}\nAnswer in JSON."


def _event_sets(count: int) -> dict[str, list[AuditEvent]]:
    bench = [AuditEvent.model_validate_json(event_payload(n)) for n in range(count)]
    secrets = []
    for n, event in enumerate(bench):
        body = event.model_dump(mode="json")
        # unique per event, so no scrubbed text is reused from an earlier event
        body["findings"][0]["detail"] = f"{ROWS[n % len(ROWS)].text} (seen {n} times)"
        secrets.append(AuditEvent.model_validate(body))
    maximal_body: dict[str, Any] = {
        **bench[0].model_dump(mode="json"),
        "agent_name": "Billing assistant " * 14,
        "findings": [
            {
                "rule": f"rule.{n}",
                "detail": ("curl uploads ~/.ssh/id_rsa to 203.0.113.7, " * 50)[:2000],
                "severity": "high",
            }
            for n in range(100)
        ],
        "metadata": {"flags": [f"flag_{n}_" + "x" * 240 for n in range(100)]},
    }
    maximal = [AuditEvent.model_validate(maximal_body) for _ in range(200)]
    return {"bench": bench, "secrets": secrets, "maximal": maximal}


def _cpu_per_event(
    build: Callable[[AuditEvent], object], events: list[AuditEvent], repeats: int
) -> float:
    for event in events[:50]:  # warm up: regex caches, imports
        build(event)
    samples = []
    for _ in range(repeats):
        began = time.process_time()
        for event in events:
            build(event)
        samples.append((time.process_time() - began) / len(events))
    return statistics.median(samples) * 1e6


def measure(events: int = 2000, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Microseconds of CPU per event, by event set and variant."""
    variants: dict[str, Callable[[AuditEvent], object]] = {
        "unscrubbed": _unscrubbed,
        "scrubbed": lambda event: build_insight_prompt(event),
        "credentials only": lambda event: build_insight_prompt(event, redact_pii=False),
    }
    results: dict[str, dict[str, float]] = {}
    for name, event_set in _event_sets(events).items():
        results[name] = {
            variant: _cpu_per_event(build, event_set, repeats)
            for variant, build in variants.items()
        }
    return results


def render(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "Prompt building, CPU per event (µs; median of repeats):",
        "",
        "| events | unscrubbed | scrubbed (PII too) | credentials only | scrubbing costs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        extra = row["scrubbed"] - row["unscrubbed"]
        lines.append(
            f"| {name} | {row['unscrubbed']:.1f} | {row['scrubbed']:.1f} | "
            f"{row['credentials only']:.1f} | {extra:+.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(render(measure(args.events, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
