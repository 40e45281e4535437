"""`SchedulerLoop`: the loop in every worker that fires schedule ticks, exactly once across all of them.

Each turn: if a workflow file changed (or every RESYNC_INTERVAL), bring the schedule rows in step with the
active versions (`store.sync`); then, when a tick is due, one transaction locks the due schedule rows
(`FOR UPDATE SKIP LOCKED`: a row another worker is firing is skipped, never waited for), plans each one's
ticks under its `catch_up` policy (`ticks.plan_fire`), and for every tick to fire inserts the tick's row
(UNIQUE per workflow and tick), the run (`insert_run_txn`, `trigger: {kind: schedule, ...}`,
`requested_by: schedule:<workflow>`) and the schedule's new `next_fire_at`. The runs are put on the work
stream after the commit (the reconciler would find them anyway). A worker killed at any moment before the
commit changed nothing: the next worker to look sees the same due ticks.

Bounded work: a pass fires at most MAX_FIRES_PER_PASS ticks and stops taking schedules after
PASS_TIME_BUDGET; when a pass had more to do, the next one starts BUSY_PAUSE later. So one worker starts at
most about MAX_FIRES_PER_PASS / BUSY_PAUSE scheduled runs a second, however many schedules the workflow
files declare; schedules that fall behind follow their `catch_up` policy. Rendering a schedule's inputs
runs the bounded expression engine off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from worker import faults
from worker import runlog as ev
from worker.bus.publisher import Publisher
from worker.definitions.expressions import is_template
from worker.definitions.model import Definition
from worker.engine.admission import admission_for
from worker.engine.inputs import InputError
from worker.errors import ExpressionError, WorkerError
from worker.schedules import store
from worker.schedules.inputs import cadence_of, render_inputs
from worker.schedules.ticks import plan_fire
from worker.secrets.transit import PayloadCipher, seal_fields
from worker.store import runs as runs_store
from worker.store.concurrency import Admission
from worker.store.definitions import DefinitionCache
from worker.store.pool import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

MAX_FIRES_PER_PASS = 50
"""Ticks (runs) one pass fires at most."""
MAX_SCHEDULES_PER_PASS = 100
"""Due schedules one pass locks at most."""
PASS_TIME_BUDGET = 0.5
"""Seconds after which a pass takes no further schedule (the ones it locked stay due for the next pass)."""
BUSY_PAUSE = 0.5
"""Seconds between a pass that had more to do and the next one."""
IDLE_POLL = 1.0
"""Longest sleep between two looks (a resumed or newly synced schedule is seen within this)."""
RESYNC_INTERVAL = 30.0
"""Seconds between two syncs when no workflow file changed."""
TICK_RETENTION = timedelta(days=7)
"""Fired ticks are kept this long (their history; exactly-once does not depend on it)."""
PRUNE_INTERVAL = 600.0


class SchedulerLoop:
    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, definitions: DefinitionCache, *, worker_id: str,
                 encrypt_payloads: bool = False, cipher: PayloadCipher | None = None,
                 off_loop: Callable[..., Awaitable[Any]] | None = None,
                 max_fires_per_pass: int = MAX_FIRES_PER_PASS) -> None:
        self.pool = pool
        self.publisher = publisher
        self.definitions = definitions
        self.worker_id = worker_id
        self.encrypt_payloads = encrypt_payloads
        self.cipher = cipher
        self._off_loop = off_loop
        self.max_fires_per_pass = max_fires_per_pass
        self._stamp: tuple[Any, ...] | None = None
        self._synced_at = 0.0
        self._pruned_at = time.monotonic()
        self._complaints: dict[str, float] = {}  # workflow -> when its failure was last logged
        self.longest_pass = 0.0
        """The longest firing pass so far, in seconds."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping` is set (or the task is cancelled): sync, fire what is due, sleep until the next tick."""
        while not stopping.is_set():
            await self.sync_if_changed()
            now, due = await store.next_due(self.pool)
            delay = IDLE_POLL
            if due is not None and due <= now:
                advanced, more = await self.fire_due()
                delay = BUSY_PAUSE if more or not advanced else 0.0
            elif due is not None:
                delay = min(IDLE_POLL, max(0.01, (due - now).total_seconds()))
            await self._prune_now_and_then()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)

    async def sync_if_changed(self) -> None:
        stamp = await store.files_stamp(self.pool)
        if stamp == self._stamp and time.monotonic() - self._synced_at < RESYNC_INTERVAL:
            return
        changes = await store.sync(self.pool)
        self._stamp, self._synced_at = stamp, time.monotonic()
        if changes:
            logger.info("schedules: %s", ", ".join(changes[:20]) + (" ..." if len(changes) > 20 else ""))

    async def fire_due(self) -> tuple[int, bool]:
        """One pass: (schedules advanced, whether more was due than this pass could do)."""
        started = time.monotonic()
        budget = self.max_fires_per_pass
        advanced = 0
        more = False
        fired: list[tuple[str, str]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            now: datetime = await conn.fetchval("SELECT now()")
            due = await store.lock_due_txn(conn, now, MAX_SCHEDULES_PER_PASS)
            more = len(due) == MAX_SCHEDULES_PER_PASS
            for schedule in due:
                if budget <= 0 or time.monotonic() - started > PASS_TIME_BUDGET:
                    more = True
                    break
                try:
                    async with conn.transaction():  # a savepoint: one schedule's failure leaves the others
                        started_runs, wake = await self._fire_one(conn, schedule, now, budget)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried next pass; the others go on
                    self._complain(schedule.workflow, exc)
                    continue
                advanced += 1
                budget -= max(1, started_runs)
                fired += wake
        self.longest_pass = max(self.longest_pass, time.monotonic() - started)
        for run_id, priority in fired:
            if priority == "signal":  # asked to cancel (on_full: cancel_oldest)
                self.publisher.enqueue(run_id)
                self.publisher.signal(run_id)
            else:
                self.publisher.enqueue(run_id, priority)
        return advanced, more

    async def _fire_one(self, conn: asyncpg.Connection, schedule: store.DueSchedule, now: datetime,
                        budget: int) -> tuple[int, list[tuple[str, str]]]:
        """Fire the schedule's due ticks (inside the pass's transaction): how many runs it created, and the runs
        to wake after the commit with their priorities (or `signal`: runs a concurrency key asked to cancel)."""
        defn = await self.definitions.get(schedule.def_hash)
        trigger = defn.spec.on.schedule if defn.spec.on is not None else None
        if trigger is None:  # cannot happen: the row's spec comes from this version
            raise RuntimeError(f"version {schedule.def_hash[:12]} of {schedule.workflow} has no schedule")
        cadence = cadence_of(trigger)
        plan = plan_fire(cadence, schedule.next_fire_at, now, trigger.catch_up, budget)
        runs: list[tuple[str, str]] = []
        created_runs = 0
        last: tuple[datetime, str] | None = None
        for tick in plan.fire:
            run_id: str | None = str(uuid.uuid4())
            error: str | None = None
            created: ev.Event | None = None
            inputs: dict[str, Any] = {}
            admission = Admission()
            try:
                inputs = await self._render(defn, tick)
                admission = await admission_for(defn, inputs, off_loop=self._off_loop)
            except (ExpressionError, InputError) as exc:
                run_id, error = None, f"inputs: {exc}"
            except WorkerError as exc:  # the concurrency key
                run_id, error = None, str(exc)
            if error is not None:
                logger.warning("schedule %s: tick %s not started: %s", schedule.workflow, tick.isoformat(), error)
            if run_id is not None:
                created = ev.Event(ev.RUN_CREATED, time.time(), data={
                    "workflow": schedule.workflow, "def_hash": schedule.def_hash, "inputs": inputs,
                    "requested_by": f"schedule:{schedule.workflow}",
                    "trigger": {"kind": "schedule", "workflow": schedule.workflow, "tick": tick.isoformat(),
                                "schedule": cadence.describe()}})
                if self.encrypt_payloads or defn.spec.encrypt_payloads:
                    await seal_fields(self.cipher, [created.data])
                    inputs = created.data["inputs"]
            if not await store.insert_tick_txn(conn, schedule.workflow, tick, def_hash=schedule.def_hash,
                                               fired_by=self.worker_id, run_id=run_id, error=error):
                continue  # fired before: next_fire_at moves under the row lock, so only a bug gets here
            faults.reached("schedule-before-insert")
            if run_id is not None and created is not None:
                admitted = await runs_store.insert_run_txn(
                    conn, run_id=run_id, workflow=schedule.workflow, def_hash=schedule.def_hash, inputs=inputs,
                    created=created, requested_by=f"schedule:{schedule.workflow}", admission=admission)
                if admitted is not None:
                    runs += admitted.wake + [(victim, "signal") for victim in admitted.signal]
                created_runs += 1
                last = (tick, run_id)
        await store.advance_txn(conn, schedule.workflow, plan.next_fire_at, fired_at=last[0] if last else None,
                                run_id=last[1] if last else None, skipped=plan.skipped)
        if plan.skipped:
            logger.info("schedule %s: skipped %d missed tick(s) (catch_up: %s)", schedule.workflow, plan.skipped,
                        trigger.catch_up)
        return created_runs, runs

    async def _render(self, defn: Definition, tick: datetime) -> dict[str, Any]:
        assert defn.spec.on is not None and defn.spec.on.schedule is not None
        trigger = defn.spec.on.schedule
        if self._off_loop is None or not is_template(trigger.inputs):
            return render_inputs(defn.spec, trigger, tick)
        result: dict[str, Any] = await self._off_loop(render_inputs, defn.spec, trigger, tick)
        return result

    def _complain(self, workflow: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._complaints.get(workflow, -1e9) >= 60:
            self._complaints[workflow] = now
            logger.warning("schedule %s: could not fire (%s: %s); retrying", workflow, type(exc).__name__, exc)

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = time.monotonic()
        removed = await store.prune_ticks(self.pool, TICK_RETENTION)
        if removed:
            logger.info("schedules: forgot %d fired tick(s) older than %s", removed, TICK_RETENTION)
