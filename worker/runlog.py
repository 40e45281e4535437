"""The run log's vocabulary: event types and the event record itself. The ground floor: the engine, the store,
telemetry and the client all import it; it imports nothing of theirs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUN_CREATED = "run.created"
RUN_RESUMED = "run.resumed"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
RUN_PAUSED = "run.paused"  # {by, at, reason, scope: run|workflow, now}: no step starts until run.unpaused
RUN_UNPAUSED = "run.unpaused"  # {by?}: the pause was lifted
STEP_SKIPPED = "step.skipped"
STEP_EXPANDED = "step.expanded"
STEP_STARTED = "step.started"
STEP_WAITING = "step.waiting"
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
TASK_REQUESTED = "task.requested"
TASK_DECIDED = "task.decided"
TASK_ESCALATED = "task.escalated"
CHILD_FINISHED = "child.finished"
EVENT_RECEIVED = "event.received"  # a `wait` step's outcome: {received: true, event} or {received: false}

RUN_TERMINAL_EVENTS = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a run's append-only log. `ts` is unix time in seconds (from the worker clock)."""

    type: str
    ts: float
    step_id: str | None = None
    item: int | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
