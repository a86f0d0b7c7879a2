"""The batch lane's pure rules: who takes it, how a file is packed, how output is read."""

from __future__ import annotations

import json

import pytest

from app.domain.batch import LanePolicy, LaneRequest, pack, read_output
from app.domain.events import Severity
from app.settings import SettingsError, load_settings

LOW, HIGH = Severity.LOW, Severity.HIGH


def request(n: int, user: str = "facts") -> LaneRequest:
    return LaneRequest(
        event_id=f"evt-{n}",
        tenant_id="acme",
        entry_id=f"1-{n}",
        stream="s",
        group="g",
        recorded_at=1.0,
        model="m",
        system="sys",
        user=user,
        max_completion_tokens=64,
        event_json="{}",
        fields={},
    )


def line(req: LaneRequest) -> bytes:
    return json.dumps({"custom_id": req.event_id, "user": req.user}).encode() + b"\n"


def test_the_listed_severities_take_the_lane_and_no_others():
    policy = LanePolicy(frozenset({LOW}))
    assert policy.takes(LOW, lag=None)
    assert not policy.takes(HIGH, lag=10**9)
    assert not LanePolicy().enabled


def test_with_a_lag_threshold_the_lane_is_taken_only_during_a_backlog():
    policy = LanePolicy(frozenset({LOW}), lag_above=100)
    assert not policy.takes(LOW, lag=100)
    assert policy.takes(LOW, lag=101)
    assert not policy.takes(LOW, lag=None)  # lag unknown: online, as without the lane


def test_a_file_holds_at_most_max_lines_requests_oldest_first():
    taken, content = pack([request(n) for n in range(7)], line, max_lines=5)
    assert [r.event_id for r in taken] == [f"evt-{n}" for n in range(5)]
    assert content.count(b"\n") == 5


def test_a_file_stays_under_the_byte_limit_and_the_rest_waits():
    requests = [request(n, user="x" * 100) for n in range(10)]
    one = len(line(requests[0]))
    taken, content = pack(requests, line, max_bytes=3 * one + 1)
    assert len(taken) == 3
    assert len(content) <= 3 * one + 1


def test_output_and_error_lines_are_read_by_custom_id():
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}
    failed = {
        "custom_id": "b",
        "response": {"status_code": 500, "body": {"error": {"message": "boom"}}},
    }
    invalid = {"custom_id": "c", "response": None, "error": {"code": "bad", "message": "no"}}
    files = [json.dumps(d).encode() for d in (ok, failed, invalid)]
    lines = read_output(b"\n".join(files[:1]), b"\n".join([*files[1:], b"not json"]))
    assert lines["a"].body == {"choices": []}
    assert (lines["b"].body, lines["b"].error) == (None, "boom")
    assert (lines["c"].body, lines["c"].error) == (None, "no")
    assert set(lines) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"groq_batch_when_lag_above": 10}, "GROQ_BATCH_WHEN_LAG_ABOVE"),
        ({"groq_batch_max_events": 50_001}, "GROQ_BATCH_MAX_EVENTS"),
        ({"groq_batch_max_wait_seconds": 0}, "GROQ_BATCH_MAX_WAIT_SECONDS"),
        ({"groq_batch_severities": "low,urgent"}, "GROQ_BATCH_SEVERITIES"),
        (
            {
                "groq_batch_severities": "low",
                "llm_provider": "openai-compatible",
                "llm_base_url": "http://ollama:11434",
            },
            "GROQ_BATCH_SEVERITIES",
        ),
    ],
)
def test_a_bad_lane_setting_stops_the_worker_naming_it(overrides, named):
    with pytest.raises(SettingsError, match=named):
        load_settings(_env_file=None, **overrides)
