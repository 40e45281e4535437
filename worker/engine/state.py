"""Run state derived from the event log by pure code (`RunState.apply`).

The state is rebuilt by folding a run's events in order. It is mutable for speed, but only
`apply` changes it, and `apply` depends on nothing but the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker import runlog as ev
from worker.models import RunStatus, StepStatus

InstanceKey = tuple[str, int | None]


@dataclass(slots=True)
class Instance:
    """One execution unit: a step, or one foreach item of a step."""

    step_id: str
    item: int | None
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    failures: int = 0  # failed attempts (resumptions after a human decision are attempts too, not failures)
    retry_at: float | None = None
    inputs: Any = None
    output: Any = None
    error: str | None = None
    wait: dict[str, Any] | None = None  # {"reason": "approval"|"sleep"|"child"|"uncertain", ...}
    decision: dict[str, Any] | None = None  # task.decided / child.finished data while waiting
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(slots=True)
class StepState:
    """Aggregate of a step: its own status, and for foreach steps the item count."""

    status: StepStatus = StepStatus.PENDING
    count: int | None = None  # foreach: number of items once expanded
    output: Any = None
    error: str | None = None


@dataclass(slots=True)
class RunState:
    run_id: str
    workflow: str = ""
    def_hash: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.PENDING
    steps: dict[str, StepState] = field(default_factory=dict)
    instances: dict[InstanceKey, Instance] = field(default_factory=dict)
    output: Any = None
    error: str | None = None
    last_seq: int = 0
    created_at: float = 0.0
    paused: dict[str, Any] | None = None
    """run.paused's data while the run is paused (no step starts); None once run.unpaused."""

    @classmethod
    def from_events(cls, run_id: str, events: list[ev.Event]) -> RunState:
        state = cls(run_id=run_id)
        for event in events:
            state.apply(event)
        return state

    def step(self, step_id: str) -> StepState:
        found = self.steps.get(step_id)
        if found is None:
            found = self.steps[step_id] = StepState()
        return found

    def instance(self, step_id: str, item: int | None) -> Instance:
        key = (step_id, item)
        found = self.instances.get(key)
        if found is None:
            found = self.instances[key] = Instance(step_id, item)
        return found

    def items_of(self, step_id: str) -> list[Instance]:
        count = self.steps[step_id].count or 0
        return [self.instance(step_id, i) for i in range(count)]

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def apply(self, e: ev.Event) -> None:
        if e.seq:
            self.last_seq = max(self.last_seq, e.seq)
        t = e.type
        if t == ev.STEP_STARTED:
            inst = self.instance(e.step_id or "", e.item)
            inst.status = StepStatus.RUNNING
            inst.attempt = e.attempt or inst.attempt + 1
            inst.inputs = e.data.get("inputs")
            inst.retry_at = None
            inst.wait = None
            inst.decision = None
            inst.started_at = e.ts
            if e.item is None:
                self.step(inst.step_id).status = StepStatus.RUNNING
            if self.status == RunStatus.PENDING:
                self.status = RunStatus.RUNNING
        elif t == ev.STEP_COMPLETED:
            if e.item is None and self.steps.get(e.step_id or "") and self.steps[e.step_id or ""].count is not None:
                st = self.steps[e.step_id or ""]  # foreach aggregate
                st.status = StepStatus.COMPLETED
                st.output = e.data.get("output")
                return
            inst = self.instance(e.step_id or "", e.item)
            inst.status = StepStatus.COMPLETED
            inst.output = e.data.get("output")
            inst.error = None
            inst.wait = None
            inst.finished_at = e.ts
            if e.item is None:
                st = self.step(inst.step_id)
                st.status = StepStatus.COMPLETED
                st.output = inst.output
        elif t == ev.STEP_FAILED:
            final = bool(e.data.get("final", True))
            if e.item is None and self.steps.get(e.step_id or "") and self.steps[e.step_id or ""].count is not None:
                st = self.steps[e.step_id or ""]
                st.status = StepStatus.FAILED
                st.error = e.data.get("error")
                return
            inst = self.instance(e.step_id or "", e.item)
            inst.error = e.data.get("error")
            inst.wait = None
            if not e.data.get("cancelled"):
                inst.failures += 1
            inst.finished_at = e.ts
            if e.data.get("cancelled"):
                inst.status = StepStatus.CANCELLED
            elif final:
                inst.status = StepStatus.FAILED
            else:
                inst.status = StepStatus.RETRYING
                inst.retry_at = e.data.get("retry_at")
            if e.item is None:
                st = self.step(inst.step_id)
                st.status = inst.status
                st.error = inst.error
        elif t == ev.STEP_WAITING:
            inst = self.instance(e.step_id or "", e.item)
            inst.status = StepStatus.WAITING
            if e.attempt is not None:
                inst.attempt = e.attempt
            inst.wait = dict(e.data)
            inst.decision = None
            if inst.started_at is None or e.data.get("reason") != "uncertain":
                inst.started_at = e.ts
            if "inputs" in e.data:
                inst.inputs = e.data["inputs"]
            if e.item is None:
                self.step(inst.step_id).status = StepStatus.WAITING
            if self.status == RunStatus.PENDING:
                self.status = RunStatus.RUNNING
        elif t == ev.TASK_ESCALATED:
            inst = self.instance(e.step_id or "", e.item)
            if inst.wait is not None:
                inst.wait = {**inst.wait, "deadline": None, "escalated": True}
        elif t in (ev.TASK_DECIDED, ev.CHILD_FINISHED, ev.EVENT_RECEIVED):
            inst = self.instance(e.step_id or "", e.item)
            inst.decision = dict(e.data)
        elif t == ev.STEP_SKIPPED:
            st = self.step(e.step_id or "")
            st.status = StepStatus.SKIPPED
        elif t == ev.STEP_EXPANDED:
            st = self.step(e.step_id or "")
            st.count = int(e.data.get("count", 0))
            st.status = StepStatus.RUNNING
        elif t == ev.RUN_CREATED:
            self.workflow = e.data.get("workflow", "")
            self.def_hash = e.data.get("def_hash", "")
            inputs = e.data.get("inputs")
            self.inputs = dict(inputs) if isinstance(inputs, dict) else {}  # e.g. encrypted, shown to a reader
            self.created_at = e.ts
        elif t == ev.RUN_COMPLETED:
            self.status = RunStatus.COMPLETED
            self.output = e.data.get("output")
        elif t == ev.RUN_FAILED:
            self.status = RunStatus.FAILED
            self.error = e.data.get("error")
        elif t == ev.RUN_CANCELLED:
            self.status = RunStatus.CANCELLED
            self.error = e.data.get("reason") or "cancelled"
        elif t == ev.RUN_PAUSED:
            self.paused = dict(e.data)
        elif t == ev.RUN_UNPAUSED:
            self.paused = None
        # run.resumed, task.requested: informational

    def running_instances(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.status == StepStatus.RUNNING]

    def waiting_instances(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.status == StepStatus.WAITING]
