"""Every Redis key and group name, in one place."""

from __future__ import annotations

from dataclasses import dataclass

WORK_GROUP = "workers"
EVENTS_MAXLEN = 100_000
WORK_MAXLEN = 1_000_000


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def work(self) -> str:
        """Stream of run ids that need a worker (consumer group WORK_GROUP)."""
        return f"{self.prefix}:work"

    @property
    def events(self) -> str:
        """Stream of live events for the console and `run --wait` (published after commit)."""
        return f"{self.prefix}:events"

    @property
    def signals(self) -> str:
        """Pub/sub channel: "a run got a signal" (approval, cancel, child finished)."""
        return f"{self.prefix}:signals"
