"""The contiguous done prefix of a partition: what may be committed, and when."""

from __future__ import annotations

import pytest

from app.domain.offsets import PartitionProgress


def test_nothing_begun_commits_nothing() -> None:
    """A partition with no record begun has nothing to commit."""
    assert PartitionProgress().committable() is None


def test_a_record_finished_out_of_order_waits_for_the_ones_before_it() -> None:
    """Offsets 10..12 in flight; 11 and 12 done first: the commit stays at 10 until 10 ends."""
    progress = PartitionProgress()
    for offset in (10, 11, 12):
        progress.begin(offset)
    assert progress.committable() == 10
    progress.committed_at(10)
    progress.done(12)
    progress.done(11)
    assert progress.committable() is None
    progress.done(10)
    assert progress.committable() == 13


def test_gaps_in_offsets_are_not_waited_for() -> None:
    """Compacted offsets (5, 9) never arrive: what was begun and is done is the prefix."""
    progress = PartitionProgress()
    for offset in (4, 6, 10):
        progress.begin(offset)
    progress.done(4)
    progress.done(6)
    assert progress.committable() == 10
    progress.done(10)
    assert progress.committable() == 11


def test_a_commit_never_goes_backwards() -> None:
    """Once 7 is committed, a prefix at or below it is not offered again."""
    progress = PartitionProgress()
    progress.begin(6)
    progress.done(6)
    progress.committed_at(7)
    assert progress.committable() is None
    progress.begin(7)
    assert progress.committable() is None
    progress.done(7)
    assert progress.committable() == 8


def test_offsets_must_be_begun_in_order() -> None:
    """A record older than one already begun is refused: the prefix would be wrong."""
    progress = PartitionProgress()
    progress.begin(5)
    with pytest.raises(ValueError, match="offset 3"):
        progress.begin(3)


def test_done_twice_is_harmless_and_idle_says_nothing_in_flight() -> None:
    """``done`` is idempotent; ``idle`` is true once every begun record is done."""
    progress = PartitionProgress()
    progress.begin(0)
    assert not progress.idle
    progress.done(0)
    progress.done(0)
    assert progress.idle
    assert progress.committable() == 1
