"""Every Redis key and group name, in one place."""

from __future__ import annotations

from dataclasses import dataclass

WORK_GROUP = "workers"
EVENTS_MAXLEN = 100_000
WORK_MAXLEN = 1_000_000

LANES: tuple[str, ...] = ("high", "normal", "low")
"""Run priorities, each with a work stream of its own (highest first)."""
LANE_WEIGHTS: dict[str, int] = {"high": 4, "normal": 2, "low": 1}
"""Of every 7 runs a busy worker takes while all three lanes have work: 4 high, 2 normal, 1 low
(worker/bus/intake.py)."""


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def work(self) -> str:
        """Stream of run ids that need a worker (consumer group WORK_GROUP)."""
        return f"{self.prefix}:work"

    def work_lane(self, priority: str | None) -> str:
        """The work stream of a priority: `work` for normal (and unknown), `work:high`, `work:low`."""
        return self.work if priority not in ("high", "low") else f"{self.work}:{priority}"

    @property
    def work_lanes(self) -> dict[str, str]:
        """Every work stream by priority, highest first (one consumer group WORK_GROUP on each)."""
        return {lane: self.work_lane(lane) for lane in LANES}

    @property
    def events(self) -> str:
        """Stream of live events for the console and `run --wait` (published after commit)."""
        return f"{self.prefix}:events"

    @property
    def signals(self) -> str:
        """Pub/sub channel: "a run got a signal" (approval, cancel, child finished)."""
        return f"{self.prefix}:signals"
