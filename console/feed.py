"""From live events to console messages (pure: no I/O, no app)."""

from __future__ import annotations

from textual.message import Message

from console.messages import RunChanged, TasksChanged, WorkersChanged, WorkflowsChanged
from worker.models import LiveEvent

# Event types after which the list of pending human tasks may differ.
_TASK_TYPES = frozenset({
    "task.requested", "task.decided", "step.waiting",
    "run.completed", "run.failed", "run.cancelled", "run.resumed",
})


def messages_for(event: LiveEvent) -> list[Message]:
    """The messages one live event should produce (possibly none)."""
    out: list[Message] = []
    data = event.data if isinstance(event.data, dict) else {}
    if event.kind in ("run", "step") and event.run_id:
        status = data.get("status")
        step, waiting = data.get("current_step"), data.get("waiting_on")
        out.append(RunChanged(event.run_id, event.type, str(status) if status is not None else None,
                              str(step) if step is not None else None, str(waiting) if waiting is not None else None))
    if event.kind == "task" or event.type in _TASK_TYPES:
        out.append(TasksChanged())
    if event.kind == "workflow" or event.type.startswith("workflow."):
        out.append(WorkflowsChanged())
    if event.kind == "worker" or event.type.startswith("worker."):
        out.append(WorkersChanged())
    return out
