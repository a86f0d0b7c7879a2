"""Which Kafka offsets may be committed: the contiguous done prefix of each partition.

Records of one partition arrive in offset order, but with several in flight they finish in
any order. Kafka keeps one committed offset per partition (the next record to read), so a
record may only be committed past once it and every record before it has its outcome
written. ``PartitionProgress`` tracks that for one partition with no I/O: ``begin`` when a
record is handed to the event path (in delivery order), ``done`` when its outcome is
written; ``committable`` is the offset to commit (None when nothing new may be).

Offsets need not be consecutive (compacted topics, transaction markers): what was begun and
is no longer in flight is done, so the tracker never assumes ``offset + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PartitionProgress"]


@dataclass(slots=True)
class PartitionProgress:
    """The records of one partition begun and not yet done, and what is committed."""

    in_flight: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the newest record begun
    committed: int | None = None  # the last offset committed (or known committed)

    def begin(self, offset: int) -> None:
        """A record is handed to the event path (records come in offset order)."""
        if self.next_offset is not None and offset < self.next_offset:
            raise ValueError(f"offset {offset} begun after {self.next_offset - 1}")
        self.in_flight.add(offset)
        self.next_offset = offset + 1

    def done(self, offset: int) -> None:
        """The record's outcome is written (idempotent)."""
        self.in_flight.discard(offset)

    @property
    def safe_offset(self) -> int | None:
        """The offset a consumer may resume from: the oldest record still in flight, or one
        past the newest begun (None when nothing was begun)."""
        if self.in_flight:
            return min(self.in_flight)
        return self.next_offset

    def committable(self) -> int | None:
        """The offset to commit now, if it moves the commit forward (else None)."""
        safe = self.safe_offset
        if safe is None or (self.committed is not None and safe <= self.committed):
            return None
        return safe

    def committed_at(self, offset: int) -> None:
        """A commit of ``offset`` succeeded."""
        if self.committed is None or offset > self.committed:
            self.committed = offset

    @property
    def idle(self) -> bool:
        """Nothing of this partition is in flight."""
        return not self.in_flight
