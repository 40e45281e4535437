"""RuntimeClient, part pauses: pause and resume a run or a whole workflow (worker/pauses), audited.

Pausing needs the `cancel` permission on the workflow (it stops work the same way). `pause_run` and
`pause_workflow` return once every run they paused has settled (parked, or recording no further step) or
`settle` seconds have passed; what had not settled by then is named in the result.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from worker.client.base import ClientBase
from worker.client.runs import _RUN_COLS, _summary
from worker.errors import Conflict, NotFound, WorkerError
from worker.models import RunSummary
from worker.oversight import audit
from worker.pauses import store

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class PauseOutcome:
    """What a pause or resume did."""

    target: str
    """The run id, or the workflow's name."""
    runs: list[str] = field(default_factory=list)
    """The unfinished runs it reached."""
    unsettled: list[str] = field(default_factory=list)
    """Pause: runs a worker was still finishing a step of when the call returned (they start nothing new)."""
    still_paused: bool = False
    """Resume of a run whose workflow is paused too: it stays paused until the workflow is resumed."""


@dataclass(frozen=True, slots=True)
class WorkflowPause:
    workflow: str
    by: str
    at: datetime
    reason: str | None
    now: bool
    runs: int
    """Its unfinished runs."""
    parked: int
    """Of those, the ones parked as `paused` (no worker holds them)."""


class PausesApi(ClientBase):
    """Pausing and resuming runs and workflows."""

    async def pause_run(self, run_id: str, *, reason: str | None = None, now: bool = False, by: str | None = None,
                        settle: float = 10.0) -> PauseOutcome:
        """Pause one run: it starts no further step (`now`: its steps in flight are interrupted, and retried on
        resume). Conflict if it is finished or already paused."""
        _check_reason(reason)
        run_id = await self.resolve_run_id(run_id)
        who = self._actor(by)
        head = await self.pool.fetchrow("SELECT workflow, status, paused_by FROM runs WHERE run_id = $1", run_id)
        if head is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(who, "cancel", head["workflow"], run_id=run_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.pause_run_txn(conn, run_id, str(who), reason, now)
            if row is not None:
                await audit.append_txn(conn, who, "pause", run_id=run_id, workflow=row["workflow"], reason=reason,
                                       seen={"status": row["status"], "current_step": row["current_step"],
                                             "now": now})
        if row is None:
            current = await self.pool.fetchrow("SELECT status, paused_by FROM runs WHERE run_id = $1", run_id)
            if current is not None and current["paused_by"] is not None:
                raise Conflict(f"run {run_id} is already paused (by {current['paused_by']})")
            raise Conflict(f"run {run_id} is already {current['status'] if current else 'gone'}")
        await self._nudge(run_id, signal=True)
        return PauseOutcome(run_id, [run_id], await self._settle([run_id], settle))

    async def resume_run(self, run_id: str, *, by: str | None = None) -> PauseOutcome:
        """Lift a run's pause: it goes on from where it stopped. Conflict if it is not paused by itself."""
        run_id = await self.resolve_run_id(run_id)
        who = self._actor(by)
        head = await self.pool.fetchrow("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if head is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(who, "cancel", head["workflow"], run_id=run_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.resume_run_txn(conn, run_id)
            if row is not None:
                await audit.append_txn(conn, who, "resume", run_id=run_id, workflow=row["workflow"],
                                       seen={"status": row["status"], "paused_by": row["paused_by"],
                                             "paused_at": row["paused_at"].isoformat(),
                                             "pause_reason": row["pause_reason"]})
            wf_pause = await store.workflow_pause(conn, head["workflow"])
        if row is None:
            if wf_pause is not None:
                raise Conflict(f"run {run_id} is paused with its workflow {head['workflow']} "
                               f"(by {wf_pause['paused_by']}): resume the workflow "
                               f"(agentrt resume --workflow {head['workflow']})")
            raise Conflict(f"run {run_id} is not paused")
        await self._nudge(run_id, signal=True)
        return PauseOutcome(run_id, [run_id], still_paused=wf_pause is not None)

    async def pause_workflow(self, workflow: str, *, reason: str | None = None, now: bool = False,
                             by: str | None = None, settle: float = 10.0) -> PauseOutcome:
        """Pause a workflow: every unfinished run of it, and every run started until it is resumed (they are
        created and wait). Conflict if it is already paused."""
        _check_reason(reason)
        who = self._actor(by)
        await self._authorize(who, "cancel", workflow)
        known = await self.pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM workflow_files WHERE name = $1 AND status <> 'deleted')
                   OR EXISTS (SELECT 1 FROM runs WHERE workflow = $1)""", workflow)
        if not known:
            raise NotFound(f"no workflow {workflow!r} (agentrt workflows lists them)")
        async with self.pool.acquire() as conn, conn.transaction():
            told = await store.pause_workflow_txn(conn, workflow, str(who), reason, now)
            if told is not None:
                await audit.append_txn(conn, who, "pause", workflow=workflow, reason=reason,
                                       seen={"runs": len(told), "now": now})
            else:
                old = await store.workflow_pause(conn, workflow)
        if told is None:
            raise Conflict(f"workflow {workflow} is already paused (by {old['paused_by'] if old else '?'})")
        await self._nudge_many(told)
        return PauseOutcome(workflow, told, await self._settle(told, settle))

    async def resume_workflow(self, workflow: str, *, by: str | None = None) -> PauseOutcome:
        """Lift a workflow's pause: its runs go on (runs paused one by one stay paused)."""
        who = self._actor(by)
        await self._authorize(who, "cancel", workflow)
        async with self.pool.acquire() as conn, conn.transaction():
            found = await store.resume_workflow_txn(conn, workflow)
            if found is not None:
                old, told = found
                await audit.append_txn(conn, who, "resume", workflow=workflow,
                                       seen={"runs": len(told), "paused_by": old["paused_by"],
                                             "paused_at": old["paused_at"].isoformat(), "reason": old["reason"]})
        if found is None:
            raise Conflict(f"workflow {workflow} is not paused")
        await self._nudge_many(told)
        return PauseOutcome(workflow, told)

    async def paused_workflows(self) -> list[WorkflowPause]:
        """The paused workflows (those the caller may view), oldest pause first."""
        rows = await store.paused_workflows(self.pool)
        return [WorkflowPause(r["workflow"], r["paused_by"], r["paused_at"], r["reason"], r["pause_now"], r["runs"],
                              r["parked"])
                for r in rows if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def paused_runs(self, workflow: str | None = None, limit: int = 100) -> list[RunSummary]:
        """Unfinished runs that are paused (by themselves or with their workflow), oldest first."""
        rows = await self.pool.fetch(
            f"""SELECT {_RUN_COLS} FROM runs
                WHERE status IN {store.ACTIVE} AND ($1::text IS NULL OR workflow = $1)
                  AND (paused_by IS NOT NULL OR workflow IN (SELECT workflow FROM workflow_pauses))
                ORDER BY created_at LIMIT $2""", workflow, limit)
        return [_summary(r) for r in rows if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def _nudge_many(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            await self._nudge(run_id, signal=True)

    async def _settle(self, run_ids: list[str], within: float) -> list[str]:
        deadline = time.monotonic() + within
        pending = run_ids
        while pending:
            pending = await store.unsettled(self.pool, pending)
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        return pending


def _check_reason(reason: str | None) -> None:
    """A reason is one line of text: it is shown in lists, terminals and the console as it is."""
    if reason is None:
        return
    if len(reason) > MAX_REASON:
        raise WorkerError(f"a reason is at most {MAX_REASON} characters")
    bad = next((c for c in reason if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise WorkerError(f"a reason is one line of text: control character {bad!r} is not allowed")
