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
  and per round (short strings' scrubbed forms are cached; this set pays the full cost of
  one detail);
* ``unknown formats``: the same, with a credential of the held-out table instead
  (``tests/support/secret_formats.py``: formats no named rule knows), shuffled per event
  and per round, so that each is a key never judged before;
* ``maximal``: the largest valid event (100 findings of 2,000 characters, 100 flags of
  256), 200 of them: the worst case the caps and the ceiling bound.

Variants: ``unscrubbed`` is the prompt as built before scrubbing existed (the allow-listed
fields as JSON), for the difference; ``named rules only`` is ``build_insight_prompt``
without the rules for keys of unknown format (as before issue #21); ``scrubbed`` is
``build_insight_prompt`` with ``PROMPT_REDACT_PII=true`` (the default), ``credentials
only`` with it false. The last line counts the held-out table's formats that the rules
for keys of unknown format catch alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from app.domain.events import AuditEvent
from app.domain.prompt import SYSTEM_PROMPT, build_insight_prompt, prompt_fields
from app.domain.redaction import GENERIC_SECRET, redact
from bench.common import event_payload
from tests.support.secret_formats import FORMATS, HELD_OUT, Format
from tests.support.secret_table import ROWS

__all__ = ["held_out", "main", "measure", "render"]


def _unscrubbed(event: AuditEvent) -> tuple[str, str]:
    facts = json.dumps(prompt_fields(event), ensure_ascii=False, separators=(",", ":"))
    return SYSTEM_PROMPT, f"Gateway decision (JSON):\n{facts}\nAnswer in JSON."


def _fresh(row: Format, seed: str) -> str:
    """The row's text with its credential's characters after the eighth shuffled."""
    rest = list(row.value[8:])
    random.Random(seed).shuffle(rest)
    return row.template.format(row.value[:8] + "".join(rest))


def _with_details(events: list[AuditEvent], details: list[str]) -> list[AuditEvent]:
    """The events with the first finding's detail replaced."""
    changed = []
    for event, detail in zip(events, details, strict=True):
        body = event.model_dump(mode="json")
        body["findings"][0]["detail"] = detail
        changed.append(AuditEvent.model_validate(body))
    return changed


EventSet = Callable[[int], list[AuditEvent]]
"""The events of a set for one round of measuring (the round numbers the unique ones)."""


def _event_sets(count: int) -> dict[str, EventSet]:
    bench = [AuditEvent.model_validate_json(event_payload(n)) for n in range(count)]

    # Unique per event and per round, so that no scrubbed text (the prompt builder caches
    # short strings, the shape rules the runs they judged) is reused from an earlier event,
    # an earlier round or another variant: these sets pay the full cost of one detail.
    def secrets(round_: int) -> list[AuditEvent]:
        details = [
            f"{ROWS[n % len(ROWS)].text} (seen {n} times, round {round_})" for n in range(count)
        ]
        return _with_details(bench, details)

    def unknown(round_: int) -> list[AuditEvent]:
        details = [_fresh(FORMATS[n % len(FORMATS)], f"{n}.{round_}") for n in range(count)]
        return _with_details(bench, details)

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
    return {
        "bench": lambda _: bench,
        "secrets": secrets,
        "unknown formats": unknown,
        "maximal": lambda _: maximal,
    }


def _cpu_per_event(
    build: Callable[[AuditEvent], object], rounds: Iterator[list[AuditEvent]], repeats: int
) -> float:
    for event in next(rounds)[:50]:  # warm up: regex caches, imports
        build(event)
    samples = []
    for _ in range(repeats):
        events = next(rounds)
        began = time.process_time()
        for event in events:
            build(event)
        samples.append((time.process_time() - began) / len(events))
    return statistics.median(samples) * 1e6


def measure(events: int = 2000, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Microseconds of CPU per event, by event set and variant."""
    variants: dict[str, Callable[[AuditEvent], object]] = {
        "unscrubbed": _unscrubbed,
        "named rules only": lambda event: build_insight_prompt(event, unknown_formats=False),
        "scrubbed": lambda event: build_insight_prompt(event),
        "credentials only": lambda event: build_insight_prompt(event, redact_pii=False),
    }
    rounds = itertools.count()
    results: dict[str, dict[str, float]] = {}
    for name, event_set in _event_sets(events).items():
        results[name] = {
            variant: _cpu_per_event(build, map(event_set, rounds), repeats)
            for variant, build in variants.items()
        }
    return results


def held_out() -> dict[str, int]:
    """The held-out table: its formats, and how many the rules for keys of unknown format
    catch alone (no named rule knows them), by their shape or by a credential's name."""
    by_shape = by_name = 0
    for row in HELD_OUT:
        found: dict[str, int] = {}
        if row.value not in redact(row.text, found=found):
            if GENERIC_SECRET in found:
                by_shape += 1
            else:
                by_name += 1
    return {
        "formats": len(FORMATS),
        "held_out": len(HELD_OUT),
        "caught_alone": by_shape + by_name,
        "by_shape": by_shape,
        "by_name": by_name,
    }


def render(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "Prompt building, CPU per event (µs; median of repeats):",
        "",
        "| events | unscrubbed | named rules only (before #21) | scrubbed (PII too) "
        "| credentials only | scrubbing costs | unknown formats cost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        extra = row["scrubbed"] - row["unscrubbed"]
        unknown = row["scrubbed"] - row["named rules only"]
        lines.append(
            f"| {name} | {row['unscrubbed']:.1f} | {row['named rules only']:.1f} | "
            f"{row['scrubbed']:.1f} | {row['credentials only']:.1f} | {extra:+.1f} | "
            f"{unknown:+.1f} |"
        )
    table = held_out()
    lines += [
        "",
        f"Held-out credential formats: {table['held_out']} of {table['formats']} held out "
        f"from the named rules; caught by the rules for unknown formats alone: "
        f"{table['caught_alone']} ({table['by_shape']} by their shape, {table['by_name']} "
        "by a credential's name before them).",
    ]
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
