"""What `decide` asks the runner to do. Plain frozen values: the runner turns them into events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Skip:
    step_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Expand:
    step_id: str
    count: int


@dataclass(frozen=True, slots=True)
class Start:
    """Begin attempt `attempt` of an instance with its rendered `with:` arguments."""

    step_id: str
    item: int | None
    attempt: int
    kind: str
    inputs: Any


@dataclass(frozen=True, slots=True)
class Complete:
    step_id: str
    item: int | None
    output: Any


@dataclass(frozen=True, slots=True)
class Fail:
    """A final failure of an instance (or of a foreach step when `item` is None)."""

    step_id: str
    item: int | None
    error: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class TimeoutTask:
    """An approval's deadline passed with no decision: the runner times the task out atomically."""

    step_id: str
    item: int | None
    task_id: str


@dataclass(frozen=True, slots=True)
class TimeoutWait:
    """A `wait` step's deadline passed with no event: the runner closes the wait atomically (an event
    that got there first wins)."""

    step_id: str
    item: int | None


@dataclass(frozen=True, slots=True)
class CompleteRun:
    output: Any


@dataclass(frozen=True, slots=True)
class FailRun:
    error: str
    step_id: str | None = None


Command = Skip | Expand | Start | Complete | Fail | TimeoutTask | TimeoutWait | CompleteRun | FailRun


@dataclass(frozen=True, slots=True)
class Decision:
    commands: list[Command] = field(default_factory=list)
    wake_at: float | None = None  # earliest time something becomes ready (retry, timer, deadline)
