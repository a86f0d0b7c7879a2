"""The trim plan: only below what every group has acknowledged, never into the newest kept."""

from __future__ import annotations

import pytest

from app.domain.retention import GroupState, StreamId, TrimPlan, acked_floor, plan_trim


def sid(text: str) -> StreamId:
    return StreamId.parse(text)


def group(name: str, last: str, pending: str | None = None) -> GroupState:
    return GroupState(name, sid(last), sid(pending) if pending else None)


def test_stream_ids_order_as_redis_orders_them():
    """Milliseconds first, then the sequence, numerically (not as text)."""
    assert sid("9-5") < sid("10-0") < sid("10-1") < sid("10-10")
    assert sid("10-9").successor() == sid("10-10")
    assert str(sid("1795573200123-7")) == "1795573200123-7"
    with pytest.raises(ValueError, match="not a stream id"):
        sid("later")


def test_a_group_with_nothing_pending_allows_everything_it_was_delivered():
    """Floor = last-delivered + 1: the last delivered entry itself is acked and may go."""
    assert acked_floor([group("g", "100-3")]) == sid("100-4")


def test_the_oldest_pending_entry_holds_the_floor_down():
    """An entry pending in the group stays, and so does everything after it."""
    assert acked_floor([group("g", "100-3", pending="50-0")]) == sid("50-0")


def test_the_slowest_of_several_groups_decides():
    """The minimum over groups: one group's progress never trims another's unread entries."""
    groups = [
        group("insights", "900-0"),
        group("archiver", "400-0"),
        group("audit", "950-0", pending="300-2"),
    ]
    assert acked_floor(groups) == sid("300-2")
    assert acked_floor(groups[:2]) == sid("400-1")


def test_a_group_that_read_nothing_trims_nothing():
    """A group at 0-0 (created at 0, not started) wants every entry: no floor at all."""
    assert acked_floor([group("insights", "900-0"), group("archiver", "0-0")]) is None


def test_a_stream_without_groups_trims_nothing():
    """No group has acknowledged anything: nothing may go."""
    assert acked_floor([]) is None
    assert plan_trim([], length=500_000, keep=0, batch=1000) is None


def test_the_newest_keep_entries_bound_the_plan():
    """At most XLEN - keep entries, the oldest, and never more than one batch per step."""
    groups = [group("g", "900-0")]
    assert plan_trim(groups, length=1500, keep=1000, batch=1000) == TrimPlan(sid("900-1"), 500)
    assert plan_trim(groups, length=20_000, keep=1000, batch=1000) == TrimPlan(sid("900-1"), 1000)
    assert plan_trim(groups, length=1000, keep=1000, batch=1000) is None
    assert plan_trim(groups, length=10, keep=0, batch=1000) == TrimPlan(sid("900-1"), 10)


def test_no_plan_without_a_floor_even_when_over_keep():
    """Over the keep bound but a group read nothing: the acked bound wins, nothing goes."""
    groups = [group("insights", "900-0"), group("archiver", "0-0")]
    assert plan_trim(groups, length=20_000, keep=1000, batch=1000) is None
