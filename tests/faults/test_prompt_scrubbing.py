"""Nothing sensitive leaves for the model: a real worker process, a fake Groq process.

The worker runs as a user runs it (``faststream run app:app``); events are written the way
the gateway writes them (``XADD acp:groq_queue * payload <json>``), one per row of the
secret table, the row's text in ``findings[].detail`` and, where it fits, in
``agent_name``. The fake Groq's request log shows what reached the model.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.faults.harness import STREAM, outcomes, wait_until
from tests.support.redis_server import free_port
from tests.support.secret_table import ROWS

pytestmark = pytest.mark.faults

FAKE_LATENCY = 0.0  # seconds per model answer (tests/faults/conftest.py)

PROSE = "the agent tried to send it to an unknown host"


def _events() -> list[dict[str, object]]:
    bodies = []
    for n, row in enumerate(ROWS):
        bodies.append(
            {
                "event_id": f"evt-{n}",
                "tenant_id": "acme",
                "agent_id": f"agent-{n}",
                "agent_name": row.text if len(row.text) <= 256 else f"Agent {n}",
                "tool_name": f"tool.{row.id}",
                "decision": "deny",
                "severity": "high",
                "timestamp": 1_795_573_200 + n,
                "findings": [
                    {"rule": f"secrets.{row.id}", "detail": f"{PROSE}: {row.text}"},
                    f"plain finding: {row.text}",
                ],
                "metadata": {"flags": ["outside_business_hours"]},
                "raw_input": f"RAW-INPUT-{n} {row.text}",
            }
        )
    return bodies


def test_no_secret_of_the_table_reaches_the_model_from_a_real_worker(client, fake, workers):
    """Every kind, in a detail, a plain finding and the agent name: none in the requests.

    Rule names, tool names and ordinary prose do reach the model; each insight record says
    how many values were masked, the canonical log line the same count (never what), and
    the metric counts them by kind.
    """
    port = free_port()
    worker = workers.start("scrub-1", metrics_port=port)
    bodies = _events()
    for body in bodies:
        client.xadd(STREAM, {"payload": json.dumps(body)})
    ids = [str(body["event_id"]) for body in bodies]
    wait_until(
        lambda: len(outcomes(client, ids)["insights"]) == len(ids),
        within=60,
        what="every event enriched",
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    requests = fake.requests()
    log = worker.log()
    records = {event_id: json.loads(client.get(f"acp:groq:insight:{event_id}")) for event_id in ids}

    assert len(requests) == len(ROWS)
    sent = json.dumps(requests, ensure_ascii=False)
    wire = json.dumps(requests)  # as escaped on the wire, too
    for row in ROWS:
        for secret in row.secrets:
            assert secret not in sent, row.name
            assert json.dumps(secret)[1:-1] not in wire, row.name
            assert secret not in log, row.name
        assert f"secrets.{row.id}" in sent  # the rule name
        assert f"tool.{row.id}" in sent  # the tool name
        assert f"[redacted:{row.kind}]" in sent
    assert sent.count(PROSE) == len(ROWS)
    assert "RAW-INPUT" not in sent

    for n, row in enumerate(ROWS):
        record = records[f"evt-{n}"]
        in_name = len(row.text) <= 256
        assert record["redactions"] >= (3 if in_name else 2)
        for secret in row.secrets:
            assert secret not in json.dumps(record, ensure_ascii=False)
    lines = [json.loads(line) for line in log.splitlines() if '"event_processed"' in line]
    counts = {line["event_id"]: line["redactions"] for line in lines}
    assert counts == {event_id: records[event_id]["redactions"] for event_id in ids}

    by_kind = {
        match.group(1): float(match.group(2))
        for match in re.finditer(
            r'^acp_groq_prompt_redactions_total\{kind="([a-z_]+)"\} ([0-9.]+)$', metrics, re.M
        )
    }
    assert {row.kind for row in ROWS} <= set(by_kind)
    assert sum(by_kind.values()) == sum(record["redactions"] for record in records.values())
