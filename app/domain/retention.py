"""Which entries of the inbound stream may go: the acknowledged floor and the trim plan.

An entry may leave the stream only when **every** consumer group of the stream has had
it delivered and has acknowledged it. For one group that is every entry

* at or below its ``last-delivered-id`` (``XINFO GROUPS``): delivered; and
* below its oldest pending entry (the smallest id of ``XPENDING <stream> <group>``):
  acknowledged, since every delivered entry is either pending or acked.

So a group allows trimming below ``min(oldest pending, last-delivered-id + 1)``, and the
stream below the smallest such bound over all its groups: the *acked floor*. A stream
without groups, or with a group that has read nothing (``last-delivered-id`` ``0-0``: an
archiver created at ``0`` that has not started), has no floor: nothing is trimmed.

The floor only ever rises while groups exist: a group's last-delivered id only advances
(unless an operator moves it back with ``XGROUP SETID``), and an entry below it that is
acked can never become pending again (``XCLAIM`` and ``XAUTOCLAIM`` move pending entries,
they do not revive acked ones). A floor read a moment ago is therefore still safe to
trim below, provided no group was created or moved back since; the trimming script in
``app/adapters/retention.py`` re-checks exactly that when it trims.

On top of the floor, the newest ``keep`` entries stay whatever their state
(``STREAM_KEEP_ENTRIES``): a plan removes at most ``length - keep`` entries, the oldest.

Nothing here does I/O; ids are Redis stream ids (``<ms>-<seq>``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GroupState", "StreamId", "TrimPlan", "acked_floor", "plan_trim"]


@dataclass(frozen=True, order=True, slots=True)
class StreamId:
    """A stream entry id, ordered as Redis orders them (milliseconds, then sequence)."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> StreamId:
        ms, _, seq = text.partition("-")
        if not ms.isdigit() or not (seq.isdigit() or seq == ""):
            raise ValueError(f"not a stream id: {text!r}")
        return cls(int(ms), int(seq or 0))

    def successor(self) -> StreamId:
        """The smallest id greater than this one."""
        return StreamId(self.ms, self.seq + 1)

    @property
    def is_zero(self) -> bool:
        return self.ms == 0 and self.seq == 0

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


@dataclass(frozen=True, slots=True)
class GroupState:
    """What one consumer group has read and not yet acknowledged."""

    name: str
    last_delivered: StreamId
    oldest_pending: StreamId | None  # None: nothing pending


@dataclass(frozen=True, slots=True)
class TrimPlan:
    """Remove entries with an id below ``below``, at most ``at_most`` of them (the oldest)."""

    below: StreamId
    at_most: int


def group_floor(group: GroupState) -> StreamId | None:
    """The id below which ``group`` has acknowledged everything; None if it read nothing."""
    if group.last_delivered.is_zero:
        return None
    floor = group.last_delivered.successor()
    if group.oldest_pending is not None and group.oldest_pending < floor:
        floor = group.oldest_pending
    return floor


def acked_floor(groups: Iterable[GroupState]) -> StreamId | None:
    """The id below which every group has acknowledged everything; None: trim nothing."""
    floors = [group_floor(group) for group in groups]
    if not floors or any(floor is None for floor in floors):
        return None
    return min(floor for floor in floors if floor is not None)


def plan_trim(
    groups: Iterable[GroupState], *, length: int, keep: int, batch: int
) -> TrimPlan | None:
    """What one trim step may remove: below the acked floor, outside the newest ``keep``.

    ``length`` is the stream's ``XLEN``; ``batch`` bounds the entries one step removes
    (a step reads the ids it removes, so its cost is bounded by it). None: nothing to do.
    """
    if length <= keep:
        return None
    floor = acked_floor(groups)
    if floor is None:
        return None
    return TrimPlan(below=floor, at_most=min(length - keep, batch))
