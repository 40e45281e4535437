"""Plain data shared by the worker, the CLI and the console (no I/O, no engine internals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

RunId = NewType("RunId", str)
TaskId = NewType("TaskId", str)

JSON = Any  # a value that orjson can encode: None, bool, int, float, str, list, dict


class RunStatus(StrEnum):
    QUEUED = "queued"
    """Behind the other runs of its concurrency key: starts when the key has a free slot."""
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    """Paused by a person (`agentrt pause`, the run or its workflow): starts no step, no worker holds it."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PauseInfo:
    """Who paused a run (or its workflow), when and why (`agentrt pause`)."""

    by: str
    at: datetime
    reason: str | None
    scope: str = "run"
    """run: the run itself was paused; workflow: its whole workflow was."""
    now: bool = False
    """The steps in flight were interrupted (`--now`) rather than let finish."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: RunId
    workflow: str
    def_hash: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    current_step: str | None
    waiting_on: str | None
    parent_run_id: RunId | None
    error: str | None
    trigger: str | None = None
    """What started the run: api, schedule, event, webhook, parent (a child run); None: a person."""
    wake_at: datetime | None = None
    """A parked run: when it wakes by itself (a timer, a retry, a wait's or an approval's deadline)."""
    priority: str = "normal"
    """high | normal | low."""
    concurrency_key: str | None = None
    """The key its workflow's `concurrency:` rendered for it (None: no key)."""
    paused: PauseInfo | None = None
    """Set while the run or its workflow is paused (the run may still be finishing its step in flight)."""
    waiting_for: str | None = None
    """A run waiting on a human: who may decide (`fred, group:finance`; `anyone`), and for an uncertain effect
    `uncertain effect: ` before it. Its deadline, if any, is `wake_at`."""

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()


@dataclass(frozen=True, slots=True)
class AttemptView:
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    status: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StepView:
    step_id: str
    kind: str
    item: int | None
    status: StepStatus
    attempts: tuple[AttemptView, ...]
    inputs: JSON
    output: JSON
    error: str | None
    idempotency_key: str | None
    progress: JSON = None
    """An agent step that has not finished: `{"usage": {...}, "cost_usd": ..., "turns": n}` summed from
    the LLM turns committed to its journal so far, and `"calls"`: those turns and the tool calls made so far,
    in call-index order, texts cut to 500 characters: `{"index", "type": "llm", "text", "tool_calls":
    [{"id", "name", "arguments"}], "usage", "model", "finish_reason", "cost_usd"}` and `{"index",
    "type": "tool", "name", "arguments", "text", "isError", "approval"}` (None for other steps)."""

    @property
    def usage(self) -> dict[str, Any] | None:
        """Tokens and cost: from a finished llm/agent step's output, else an unfinished agent's so far."""
        return usage_in(self.output) or usage_in(self.progress)


def usage_in(value: object) -> dict[str, Any] | None:
    """`{input_tokens, output_tokens, total_tokens, cost_usd}` from a value with `usage` (and `cost_usd`)."""
    if not isinstance(value, dict) or not isinstance(value.get("usage"), dict):
        return None
    usage = value["usage"]
    if "total_tokens" not in usage:
        return None
    cost = value.get("cost_usd")
    return {
        "input_tokens": int(usage.get("input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
        "cost_usd": float(cost) if isinstance(cost, int | float) else None,
    }


@dataclass(frozen=True, slots=True)
class EventView:
    seq: int
    ts: datetime
    type: str
    step_id: str | None
    item: int | None
    attempt: int | None
    data: JSON


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """Where a queued run stands: `ahead` runs of its key start before it; `active` hold its slots now."""

    key: str
    limit: int
    ahead: int
    active: int

    def describe(self) -> str:
        """`queued: 2 ahead for key customer-7 (limit 1, 1 active)`."""
        return f"queued: {self.ahead} ahead for key {self.key} (limit {self.limit}, {self.active} active)"


@dataclass(frozen=True, slots=True)
class RunDetail:
    summary: RunSummary
    inputs: JSON
    output: JSON
    steps: tuple[StepView, ...]
    events: tuple[EventView, ...]
    children: tuple[RunId, ...] = ()
    queue: QueueInfo | None = None
    """A queued run's place in its key's queue."""


@dataclass(frozen=True, slots=True)
class HumanTask:
    task_id: TaskId
    run_id: RunId
    workflow: str
    step_id: str
    kind: str  # "approval" | "uncertain"
    status: TaskStatus
    prompt: str
    context: JSON
    created_at: datetime
    deadline: datetime | None
    on_timeout: str | None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    requested_by: str | None = None
    """Who started the run that asks (its requester)."""
    approvers: tuple[str, ...] = ()
    """Users or `group:NAME` allowed to decide (empty: anyone the policy allows)."""
    min_approvals: int = 1
    approved_by: tuple[str, ...] = ()
    """Approvals recorded so far (a task needing several stays pending until `min_approvals`)."""
    escalated: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    path: str
    name: str | None
    def_hash: str | None
    status: str  # "active" | "invalid" | "deleted"
    error: str | None
    error_line: int | None
    error_column: int | None
    updated_at: datetime
    versions: int = 0
    excerpt: str | None = None
    """For an invalid file: the offending line of the file, as it was when the error was found."""


@dataclass(frozen=True, slots=True)
class WorkflowVersion:
    """One stored version (by content hash) of a workflow."""

    def_hash: str
    name: str
    created_at: datetime
    """When a worker first loaded (and stored) this version."""
    source_path: str | None
    active: bool
    """New runs of the workflow use this version."""
    runs: int = 0
    """Runs pinned to this version (started while it was active)."""


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """One entry of the hot-reload history: a file loaded, found invalid or deleted."""

    id: int
    at: datetime
    kind: str  # "loaded" | "invalid" | "deleted"
    path: str
    name: str | None
    def_hash: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    held_runs: tuple[RunId, ...] = field(default_factory=tuple)
    concurrency: int = 0


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One entry of the live event stream (published after commit)."""

    kind: str  # "run" | "step" | "workflow" | "task" | "worker"
    type: str
    run_id: RunId | None
    data: JSON
    stream_id: str = ""


@dataclass(frozen=True, slots=True)
class SpanView:
    """A finished span from the span store (what the console's waterfall draws)."""

    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start: datetime
    end: datetime
    status: str  # "unset" | "ok" | "error"
    status_message: str | None
    attributes: JSON


@dataclass(frozen=True, slots=True)
class StepLogLine:
    id: int
    step_id: str
    item: int | None
    attempt: int | None
    ts: datetime
    level: str
    message: str
