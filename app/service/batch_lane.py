"""The batch lane's online half: which events take it, and where their requests wait.

``BatchLane`` is what ``InsightService`` asks of every admitted event (the one decision the
lane adds to the online path); ``LaneRunner`` (``app.service.lane_runner``) submits the
waiting requests and follows the batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.batch import LanePolicy
from app.domain.events import Severity
from app.domain.ports import LaneStore

__all__ = ["BatchLane"]


@dataclass(slots=True)
class BatchLane:
    """The lane's policy, its store, and the group's lag as last sampled (by the runner)."""

    policy: LanePolicy
    store: LaneStore
    lag: int | None = None

    def takes(self, severity: Severity) -> bool:
        return self.policy.takes(severity, self.lag)
