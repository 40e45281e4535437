"""RuntimeClient, part schedules: the workflows' schedules (`on: {schedule: ...}`), pausing and resuming them.

Schedules are listed once a worker has picked the workflow file up (every worker keeps the schedule rows in
step with the active versions; worker/schedules). Pausing stops a schedule's ticks from firing until it is
resumed; the ticks that came due meanwhile are then handled by its `catch_up` policy like ticks missed while
no worker ran (`latest`: one run, for the most recent of them; `all`: a run for each, at most 1000; `none`:
none). A paused schedule stays paused across edits of its file. Pausing and resuming need the policy file's
`cancel` permission on the workflow (the people who may stop its runs may stop them from starting), and each
writes one audit record with the acting identity, where it acted from, and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from worker.client.base import ClientBase
from worker.errors import Conflict, NotFound, WorkerError
from worker.models import RunId
from worker.oversight import audit
from worker.schedules import store
from worker.schedules.ticks import Cadence

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    workflow: str
    schedule: str
    """`cron 0 2 * * * (Europe/Berlin)` or `every 30s`."""
    catch_up: str
    timezone: str
    next_fire_at: datetime | None
    """The next tick (None: paused schedules keep theirs; None only for a cron that never fires again)."""
    last_fire_at: datetime | None
    """The tick of the last run it started."""
    last_run_id: RunId | None
    last_run_status: str | None
    paused: bool
    paused_by: str | None
    paused_reason: str | None
    paused_at: datetime | None
    skipped_ticks: int
    """Due ticks its catch_up policy dropped, in all."""
    last_error: str | None
    """Why the latest tick started no run (its inputs were refused), if it did not."""
    def_hash: str


@dataclass(frozen=True, slots=True)
class ScheduleTick:
    workflow: str
    tick_at: datetime
    run_id: RunId | None
    fired_by: str
    fired_at: datetime
    error: str | None


def _info(r: asyncpg.Record) -> ScheduleInfo:
    spec: dict[str, Any] = r["spec"] or {}
    return ScheduleInfo(
        workflow=r["workflow"], schedule=Cadence.from_spec(spec).describe(), catch_up=spec.get("catch_up", "latest"),
        timezone=spec.get("timezone", "UTC"), next_fire_at=r["next_fire_at"], last_fire_at=r["last_fire_at"],
        last_run_id=RunId(r["last_run_id"]) if r["last_run_id"] else None,
        last_run_status=r.get("last_run_status"), paused=r["paused"], paused_by=r["paused_by"],
        paused_reason=r["paused_reason"], paused_at=r["paused_at"], skipped_ticks=r["skipped_ticks"],
        last_error=r.get("last_error"), def_hash=r["def_hash"])


class SchedulesApi(ClientBase):
    """`list_schedules`, `get_schedule`, `schedule_ticks`, `pause_schedule`, `resume_schedule`."""

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every active schedule of a workflow the caller may view, by workflow name."""
        return [_info(r) for r in await store.rows(self.pool)
                if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def get_schedule(self, workflow: str) -> ScheduleInfo:
        found = await store.rows(self.pool, workflow)
        if not found:
            raise NotFound(f"workflow {workflow!r} has no schedule (see `agentrt schedules`)")
        await self._authorize(self.identity, "view", workflow, audit_denial=False)
        return _info(found[0])

    async def schedule_ticks(self, workflow: str, limit: int = 50) -> list[ScheduleTick]:
        """The most recent fired ticks of a workflow's schedule, newest first (kept 7 days)."""
        await self._authorize(self.identity, "view", workflow, audit_denial=False)
        rows = await self.pool.fetch(
            """SELECT workflow, tick_at, run_id::text, fired_by, fired_at, error FROM schedule_ticks
                WHERE workflow = $1 ORDER BY tick_at DESC LIMIT $2""", workflow, max(1, min(limit, 10_000)))
        return [ScheduleTick(r["workflow"], r["tick_at"], RunId(r["run_id"]) if r["run_id"] else None, r["fired_by"],
                             r["fired_at"], r["error"]) for r in rows]

    async def pause_schedule(self, workflow: str, reason: str, *, by: str | None = None) -> ScheduleInfo:
        """Stop the schedule's ticks from firing until `resume_schedule` (audited; a reason is required)."""
        if not reason or not reason.strip():
            raise WorkerError("pausing a schedule needs a reason (it is recorded in the audit trail)")
        return await self._set_paused(workflow, True, reason, by)

    async def resume_schedule(self, workflow: str, reason: str | None = None, *,
                              by: str | None = None) -> ScheduleInfo:
        """Let the schedule fire again; ticks missed while paused follow its catch_up policy (audited)."""
        return await self._set_paused(workflow, False, reason, by)

    async def _set_paused(self, workflow: str, paused: bool, reason: str | None, by: str | None) -> ScheduleInfo:
        if reason is not None and len(reason) > MAX_REASON:
            raise WorkerError(f"a reason is at most {MAX_REASON} characters")
        who = self._actor(by)
        await self._authorize(who, "cancel", workflow)
        async with self.pool.acquire() as conn, conn.transaction():
            before, changed = await store.set_paused_txn(conn, workflow, paused, str(who), reason)
            if before is not None and changed:
                await audit.append_txn(
                    conn, who, "schedule.pause" if paused else "schedule.resume", workflow=workflow, reason=reason,
                    seen={"paused": before["paused"], "paused_by": before["paused_by"],
                          "next_fire_at": before["next_fire_at"].isoformat() if before["next_fire_at"] else None})
        if before is None:
            raise NotFound(f"workflow {workflow!r} has no schedule (see `agentrt schedules`)")
        if not changed:
            if paused:
                raise Conflict(f"the schedule of {workflow} is already paused (by {before['paused_by']}"
                               + (f": {before['paused_reason']}" if before["paused_reason"] else "") + ")")
            raise Conflict(f"the schedule of {workflow} is not paused")
        return await self.get_schedule(workflow)
