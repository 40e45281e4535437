"""What happened, as notifications: pure functions from a commit (or a due task) to outbox rows. No I/O.

- `commit_rows`: the rows one run commit causes: a human task created (`task.created`), a task escalated at its
  deadline (`task.escalated`), the run failed after its last attempt (`run.failed`), the run taken over from a
  worker whose lease expired (`worker.lost`: one notification per lost worker, aggregating its runs).
- `expiring_rows`: a pending task whose deadline is near (`task.expiring`, found by the periodic scan).

Each row has a stable notification id: uuid5 of the kind and the task or run id; a `worker.lost` id is derived in
SQL from the lost worker's id and its last heartbeat (worker/notify/outbox.py), so every takeover from one death
shares one notification and a later death of a worker that reuses its id gets a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from worker import runlog as ev
from worker.engine.state import RunState
from worker.notify.outbox import OutboxRow
from worker.store.writer import NewTask

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "agentrt:notifications")
LOST_WORKER_COALESCE_S = 15.0
"""A worker.lost row waits this long (by default; the worker passes its lease TTL) before its first delivery, so
the takeovers of one death are listed in one notification: its leases expire together, but the reconciler hands
a run out again only once its last enqueue is `AGENTRT_REDELIVER_AFTER` old, so takeovers spread over about one
lease TTL."""
TEXT_LIMIT = 1000
LOST_RUNS_LISTED = 50

Route = Callable[[str, str], list[str]]
"""(kind, workflow) -> the targets a notification goes to."""


def notification_id(kind: str, subject: str) -> str:
    """The stable id of a notification: what a receiver deduplicates on."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{subject}"))


def iso(ts: float | datetime | None) -> str | None:
    if ts is None:
        return None
    when = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clip(text: Any, limit: int = TEXT_LIMIT) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _left(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def task_body(kind: str, *, workflow: str, run_id: str, task: dict[str, Any], now: float) -> dict[str, Any]:
    """The body of a task notification; `task` holds task_id, kind, step_id, item, prompt, deadline (unix time or
    None), on_timeout, approvers."""
    where = f"{workflow} run {run_id[:8]} step {task['step_id']}"
    prompt = _clip(task.get("prompt"), 300)
    deadline = task.get("deadline")
    if kind == "task.created" and task.get("kind") == "uncertain":
        summary = f"Human decision needed: {where} may have had its effect (uncertain): {prompt}"
    elif kind == "task.created":
        until = f" (deadline in {_left(deadline - now)}, then {task.get('on_timeout') or 'reject'})" if deadline \
            else ""
        summary = f"Approval needed: {where}: {prompt}{until}"
    elif kind == "task.expiring":
        summary = (f"Approval about to time out in {_left((deadline or now) - now)} "
                   f"(then {task.get('on_timeout') or 'reject'}): {where}: {prompt}")
    else:
        summary = f"Approval escalated, its deadline passed with no decision: {where}: {prompt}"
    return {
        "kind": kind, "summary": summary, "occurred_at": iso(now), "workflow": workflow, "run_id": run_id,
        "task": {"task_id": task["task_id"], "kind": task.get("kind", "approval"), "step_id": task["step_id"],
                 "item": task.get("item"), "prompt": _clip(task.get("prompt")), "deadline": iso(deadline),
                 "on_timeout": task.get("on_timeout"), "approvers": list(task.get("approvers") or [])},
        "hint": f"agentrt approvals; agentrt show {run_id}",
    }


def _row(route: Route, kind: str, subject: str, workflow: str, body: dict[str, Any], *, run_id: str | None,
         task_id: str | None, give_up: float, delay: float = 0.0, stable: bool = True) -> list[OutboxRow]:
    targets = route(kind, workflow)
    nid = notification_id(kind, subject) if stable else None
    stored = None if kind == "worker.lost" else workflow  # about a worker (its runs are listed in the body)
    return [OutboxRow(nid, target, kind, subject, stored, run_id, task_id, body, delay, give_up) for target in targets]


def commit_rows(route: Route, state: RunState, events: Sequence[ev.Event], tasks: Sequence[NewTask], *,
                workflow: str, now: float, give_up: float,
                lost_delay: float = LOST_WORKER_COALESCE_S) -> list[OutboxRow]:
    """The outbox rows of one run commit (`events` and `tasks` as they are committed, plaintext)."""
    run_id = state.run_id
    rows: list[OutboxRow] = []
    for t in tasks:
        task = {"task_id": t.task_id, "kind": t.kind, "step_id": t.step_id, "item": t.item, "prompt": t.prompt,
                "deadline": t.deadline, "on_timeout": t.on_timeout, "approvers": t.approvers}
        rows += _row(route, "task.created", t.task_id, workflow,
                     task_body("task.created", workflow=workflow, run_id=run_id, task=task, now=now),
                     run_id=run_id, task_id=t.task_id, give_up=give_up)
    for e in events:
        if e.type == ev.TASK_ESCALATED:
            inst = state.instances.get((e.step_id or "", e.item))
            wait = (inst.wait if inst is not None else None) or {}
            task_id = str(e.data.get("task_id"))
            task = {"task_id": task_id, "kind": "approval", "step_id": e.step_id, "item": e.item,
                    "prompt": wait.get("prompt"), "deadline": None, "on_timeout": "escalate", "approvers": []}
            rows += _row(route, "task.escalated", task_id, workflow,
                         task_body("task.escalated", workflow=workflow, run_id=run_id, task=task, now=now),
                         run_id=run_id, task_id=task_id, give_up=give_up)
        elif e.type == ev.RUN_FAILED:
            inst = next((i for i in state.instances.values() if i.step_id == e.step_id), None)
            error = _clip(e.data.get("error"))
            where = f" at step {e.step_id}" if e.step_id else ""
            attempts = inst.attempt if inst is not None else None
            after = f" after {attempts} attempt(s)" if attempts else ""
            body: dict[str, Any] = {
                "kind": "run.failed", "occurred_at": iso(now), "workflow": workflow, "run_id": run_id,
                "summary": f"Run failed: {workflow} run {run_id[:8]}{where}{after}: {_clip(error, 300)}",
                "run": {"step_id": e.step_id, "error": error, "attempts": attempts},
                "hint": f"agentrt show {run_id}; agentrt replay {run_id}"}
            rows += _row(route, "run.failed", run_id, workflow, body, run_id=run_id, task_id=None, give_up=give_up)
        elif e.type == ev.RUN_RESUMED and e.data.get("previous_owner"):
            lost, by = str(e.data["previous_owner"]), str(e.data.get("worker") or "")
            body = {"kind": "worker.lost", "occurred_at": iso(now), "workflow": None, "run_id": None,
                    "summary": f"Worker {lost} stopped heartbeating while holding runs; {by} took them over",
                    "worker": {"lost": lost, "taken_over_by": by, "run_count": 1,
                               "runs": [{"run_id": run_id, "workflow": workflow,
                                         "in_flight": int(e.data.get("orphans") or 0)}]},
                    "hint": "agentrt workers; agentrt runs --status running"}
            rows += _row(route, "worker.lost", lost, workflow, body, run_id=None, task_id=None, give_up=give_up,
                         delay=lost_delay, stable=False)
    return rows


def expiring_rows(route: Route, tasks: Sequence[dict[str, Any]], *, now: float, give_up: float) -> list[OutboxRow]:
    """`task.expiring` rows for due tasks (rows of human_tasks joined with their run's workflow; deadline as
    unix time)."""
    rows: list[OutboxRow] = []
    for t in tasks:
        run_id, task_id, workflow = str(t["run_id"]), str(t["task_id"]), str(t["workflow"])
        body = task_body("task.expiring", workflow=workflow, run_id=run_id, task={**t, "task_id": task_id}, now=now)
        rows += _row(route, "task.expiring", task_id, workflow, body, run_id=run_id, task_id=task_id,
                     give_up=give_up)
    return rows
