"""RuntimeClient, part tasks: human tasks (approvals and uncertain effects): list, get, decide, resolve."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from worker.client.base import ClientBase
from worker.errors import Conflict, NotFound, PermissionDenied, WorkerError
from worker.models import HumanTask, RunId, TaskId, TaskStatus
from worker.oversight import audit
from worker.store import runs as store

logger = logging.getLogger("worker.client")  # the name its records had before the client became a package


def _task(r: asyncpg.Record) -> HumanTask:
    return HumanTask(TaskId(str(r["task_id"])), RunId(str(r["run_id"])), r["workflow"], r["step_id"], r["kind"],
                     TaskStatus(r["status"]), r["prompt"], r["context"], r["created_at"], r["deadline"],
                     r["on_timeout"], r["decided_by"], r["decided_at"], r["reason"], r["requested_by"],
                     tuple(r["approvers"] or ()), r["min_approvals"],
                     tuple(str(a.get("by")) for a in (r["approvals"] or []) if isinstance(a, dict)), r["escalated"])


class TasksApi(ClientBase):
    """Human tasks: every decision is one transaction with its audit record; the first decision wins."""

    _TASK_SQL = """SELECT t.task_id, t.run_id, r.workflow, t.step_id, t.kind, t.status, t.prompt, t.context,
                          t.created_at, t.deadline, t.on_timeout, t.decided_by, t.decided_at, t.reason,
                          coalesce(t.requested_by, r.requested_by) AS requested_by, t.approvers, t.min_approvals,
                          t.approvals, t.escalated
                   FROM human_tasks t JOIN runs r ON r.run_id = t.run_id"""

    async def list_tasks(self, *, status: str | None = "pending", run_id: str | None = None,
                         limit: int = 200) -> list[HumanTask]:
        """The approvals inbox, oldest first: from the read replica when one is configured (a decision reads
        its task again on the primary, under a lock: the first decision wins)."""
        rows = await self.reader.fetch(
            self._TASK_SQL + """ WHERE ($1::text IS NULL OR t.status = $1) AND ($2::uuid IS NULL OR t.run_id = $2)
                                 ORDER BY t.created_at LIMIT $3""", status, run_id, limit)
        return [_task(r) for r in rows if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def get_task(self, task_id: str) -> HumanTask:
        task_id = await self._resolve_task_id(task_id)
        row = await self.pool.fetchrow(self._TASK_SQL + " WHERE t.task_id = $1", task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}")
        return _task(row)

    async def _resolve_task_id(self, task_id: str) -> str:
        try:
            return str(uuid.UUID(task_id))
        except ValueError:
            pass
        rows = await self.pool.fetch("SELECT task_id::text FROM human_tasks WHERE task_id::text LIKE $1 LIMIT 2",
                                     task_id.lower() + "%")
        if len(rows) != 1 or len(task_id) < 4:
            raise NotFound(f"no task {task_id!r}" if not rows else f"task id prefix {task_id!r} is ambiguous")
        return str(rows[0]["task_id"])

    async def decide(self, task_id: str, *, approve: bool, by: str | None = None,
                     reason: str | None = None) -> HumanTask:
        """Approve or reject an approval task. The first decision wins; a later one raises Conflict."""
        if not approve and not (reason and reason.strip()):
            raise WorkerError("a rejection needs a reason")
        return await self._decide(task_id, kind="approval", status="approved" if approve else "rejected",
                                  by=by, reason=reason, decision=None)

    async def resolve(self, task_id: str, *, action: str, output: Any = None, by: str | None = None,
                      reason: str | None = None) -> HumanTask:
        """Settle an uncertain-effect task: `retry` (same idempotency key), `done` (with output) or `fail`."""
        if action not in ("retry", "done", "fail"):
            raise WorkerError("action must be retry, done or fail")
        return await self._decide(task_id, kind="uncertain", status="resolved", by=by, reason=reason,
                                  decision={"action": action, "output": output})

    async def _decide(self, task_id: str, *, kind: str, status: str, by: str | None, reason: str | None,
                      decision: dict[str, Any] | None) -> HumanTask:
        """Record a human decision atomically, with its audit record; the first decision wins.

        Approvals may need several approvers (`min_approvals`), may be limited to `approvers`
        (users or `group:name`) and may forbid the run's requester from approving.
        """
        task_id = await self._resolve_task_id(task_id)
        who = self._actor(by)
        denied: str | None = None
        final = False
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT t.*, r.workflow, r.requested_by AS run_requester FROM human_tasks t
                   JOIN runs r ON r.run_id = t.run_id WHERE t.task_id = $1 FOR UPDATE OF t""", task_id)
            if row is None:
                raise NotFound(f"no task {task_id!r}")
            if row["kind"] != kind:
                raise WorkerError(f"task {task_id} is an {row['kind']} task, not {kind}")
            run_id, workflow = str(row["run_id"]), row["workflow"]
            seen = {"step": row["step_id"], "prompt": row["prompt"], "context": row["context"],
                    "deadline": row["deadline"].isoformat() if row["deadline"] else None}
            requester = (row["run_requester"] or "").split("@", 1)[0]
            if not self.authorizer.allowed(who, "approve", workflow):
                denied = f"{who.user} may not decide tasks of workflow {workflow!r} (policy file)"
            elif not self.authorizer.matches_any(who, list(row["approvers"] or [])):
                denied = f"{who.user} is not one of this approval's approvers: {', '.join(row['approvers'])}"
            elif row["forbid_requester"] and requester == who.user:
                denied = f"{who.user} requested this run and may not approve it"
            if denied is not None:
                await audit.append_txn(conn, who, "approve" if status == "approved" else status.rstrip("d"),
                                       outcome="denied", run_id=run_id, task_id=task_id, workflow=workflow,
                                       seen=seen, reason=denied)
            elif row["status"] != "pending":
                raise Conflict(f"task {task_id} was already {row['status']} by {row['decided_by']} "
                               f"at {row['decided_at']:%Y-%m-%d %H:%M:%S} UTC")
            else:
                approvals = list(row["approvals"] or [])
                new_status = status
                decided_by = who.user
                if kind == "approval" and status == "approved":
                    if any(a.get("by") == who.user for a in approvals):
                        raise Conflict(f"{who.user} already approved task {task_id}; it needs "
                                       f"{row['min_approvals'] - len(approvals)} more approver(s)")
                    approvals.append({"by": who.user, "origin": who.origin, "reason": reason,
                                      "at": datetime.now(tz=UTC).isoformat()})
                    if len(approvals) < row["min_approvals"]:
                        new_status = "pending"
                    decided_by = ", ".join(a["by"] for a in approvals)
                final = new_status != "pending"
                await conn.execute(
                    """UPDATE human_tasks SET status = $2, approvals = $3,
                              decided_by = CASE WHEN $7 THEN $4 ELSE decided_by END,
                              decided_at = CASE WHEN $7 THEN now() ELSE decided_at END,
                              reason = CASE WHEN $7 THEN $5 ELSE reason END,
                              decision = CASE WHEN $7 THEN $6 ELSE decision END
                       WHERE task_id = $1""",
                    task_id, new_status, approvals, decided_by, reason, decision, final)
                outcome = new_status if final else f"approval {len(approvals)} of {row['min_approvals']}"
                await audit.append_txn(conn, who, {"approved": "approve", "rejected": "reject"}.get(status, "resolve"),
                                       outcome=outcome, run_id=run_id, task_id=task_id, workflow=workflow,
                                       seen=seen, decision=decision or {"status": status}, reason=reason)
                if final:
                    await store.signal_run_txn(conn, run_id)
        if denied is not None:
            logger.warning("denied: %s", denied)
            raise PermissionDenied(denied)
        if final:
            await self._nudge(run_id, signal=True)
        return await self.get_task(task_id)
