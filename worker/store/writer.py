"""Group commit of run events: appends from many runs share one round trip and one transaction.

Every append is fenced: it commits only if the worker still owns the run at the epoch it holds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from worker.engine.events import Event
from worker.store import waits
from worker.store.pool import dumps
from worker.store.runs import insert_run_txn, signal_run_txn, ts_to_dt

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RunUpdate:
    status: str
    current_step: str | None = None
    waiting_on: str | None = None
    output: Any = None
    error: str | None = None
    finished: bool = False


@dataclass(slots=True)
class NewTask:
    task_id: str
    step_id: str
    item: int | None
    kind: str
    prompt: str
    context: Any
    deadline: float | None
    on_timeout: str | None
    task_key: str | None = None
    approvers: list[str] = field(default_factory=list)
    min_approvals: int = 1
    forbid_requester: bool = False


@dataclass(slots=True)
class NewWait:
    """A `wait` step began waiting: registered with its step.waiting event (see store/waits.py)."""

    step_id: str
    item: int | None
    attempt: int
    name: str
    key: str | None
    since: float
    deadline: float | None


@dataclass(slots=True)
class NewChild:
    run_id: str
    workflow: str
    def_hash: str
    inputs: dict[str, Any]
    created: Event
    parent_step: str
    parent_item: int | None


@dataclass(slots=True)
class Append:
    run_id: str
    epoch: int
    events: list[Event]
    update: RunUpdate
    tasks: list[NewTask] = field(default_factory=list)
    children: list[NewChild] = field(default_factory=list)
    waits: list[NewWait] = field(default_factory=list)
    cancel_tasks: bool = False
    signal_parent: str | None = None
    future: asyncio.Future[bool] | None = None

    @property
    def simple(self) -> bool:
        return not (self.tasks or self.children or self.waits or self.cancel_tasks or self.signal_parent)


_APPEND_SQL = """
WITH req AS (
    SELECT * FROM unnest($2::uuid[], $3::bigint[]) AS r(run_id, epoch)
), ok AS (
    SELECT runs.run_id FROM runs JOIN req ON runs.run_id = req.run_id AND runs.lease_epoch = req.epoch
    WHERE runs.lease_owner = $1
    FOR NO KEY UPDATE OF runs
), ins AS (
    INSERT INTO events (run_id, seq, ts, type, step_id, item, attempt, data)
    SELECT e.run_id, e.seq, to_timestamp(e.ts), e.type, e.step_id, e.item, e.attempt, e.data
    FROM unnest($4::uuid[], $5::int[], $6::float8[], $7::text[], $8::text[], $9::int[], $10::int[], $11::jsonb[])
         AS e(run_id, seq, ts, type, step_id, item, attempt, data)
    WHERE e.run_id IN (SELECT run_id FROM ok)
    RETURNING 1
), upd AS (
    UPDATE runs SET status = u.status, current_step = u.current_step, waiting_on = u.waiting_on,
           output = CASE WHEN u.finished THEN u.output::jsonb ELSE runs.output END,
           error = CASE WHEN u.finished THEN u.error ELSE runs.error END,
           finished_at = CASE WHEN u.finished THEN now() ELSE runs.finished_at END,
           lease_owner = CASE WHEN u.finished THEN NULL ELSE runs.lease_owner END,
           lease_expires = CASE WHEN u.finished THEN NULL ELSE runs.lease_expires END,
           wake_at = CASE WHEN u.finished THEN NULL ELSE runs.wake_at END,
           next_seq = u.next_seq, updated_at = now()
    FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[],
                $19::int[]) AS u(run_id, status, current_step, waiting_on, output, error, finished, next_seq)
    WHERE runs.run_id = u.run_id AND runs.run_id IN (SELECT run_id FROM ok)
    RETURNING 1
)
SELECT run_id FROM ok
"""


def _params(worker_id: str, batch: list[Append]) -> list[Any]:
    ev_cols: list[list[Any]] = [[], [], [], [], [], [], [], []]
    up_cols: list[list[Any]] = [[], [], [], [], [], [], [], []]
    for a in batch:
        for e in a.events:
            for col, value in zip(ev_cols, (a.run_id, e.seq, e.ts, e.type, e.step_id, e.item, e.attempt, e.data),
                                  strict=True):
                col.append(value)
        u = a.update
        next_seq = (a.events[-1].seq + 1) if a.events else 0
        # the output as JSON text: in a jsonb[] parameter asyncpg would read a list output as a sub-array
        output = dumps(u.output) if u.finished and u.output is not None else None
        for col, value in zip(up_cols, (a.run_id, u.status, u.current_step, u.waiting_on, output, u.error,
                                        u.finished, next_seq), strict=True):
            col.append(value)
    return [worker_id, [a.run_id for a in batch], [a.epoch for a in batch], *ev_cols, *up_cols]


async def _extras_txn(conn: asyncpg.Connection, a: Append) -> None:
    for t in a.tasks:
        await conn.execute(
            """INSERT INTO human_tasks (task_id, run_id, step_id, item, kind, prompt, context, deadline, on_timeout,
                                       task_key, approvers, min_approvals, forbid_requester, requested_by)
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, r.requested_by
               FROM runs r WHERE r.run_id = $2
               ON CONFLICT (task_id) DO NOTHING""",
            t.task_id, a.run_id, t.step_id, t.item, t.kind, t.prompt, t.context, ts_to_dt(t.deadline), t.on_timeout,
            t.task_key, t.approvers, t.min_approvals, t.forbid_requester,
        )
    for c in a.children:
        await insert_run_txn(conn, run_id=c.run_id, workflow=c.workflow, def_hash=c.def_hash, inputs=c.inputs,
                             created=c.created, requested_by=f"run:{a.run_id}", parent_run_id=a.run_id,
                             parent_step=c.parent_step, parent_item=c.parent_item)
    for w in a.waits:
        await waits.register_txn(conn, a.run_id, w.step_id, w.item, w.attempt, w.name, w.key, w.since, w.deadline)
    if a.cancel_tasks:
        await conn.execute(
            """UPDATE human_tasks SET status = 'cancelled', decided_at = now(), reason = 'run cancelled'
               WHERE run_id = $1 AND status = 'pending'""", a.run_id)
        await waits.cancel_txn(conn, a.run_id)
    if a.signal_parent:
        await signal_run_txn(conn, a.signal_parent)


async def write_batch(conn: asyncpg.Connection, worker_id: str, batch: list[Append]) -> set[str]:
    """Commit a batch; returns the run ids whose appends committed (the others were fenced out)."""
    params = _params(worker_id, batch)
    if all(a.simple for a in batch):
        rows = await conn.fetch(_APPEND_SQL, *params)
        return {str(r["run_id"]) for r in rows}
    async with conn.transaction():
        # the waits' locks before any run row: the order an event's delivery takes them in (no deadlock)
        await waits.lock_txn(conn, [(w.name, w.key) for a in batch for w in a.waits])
        rows = await conn.fetch(_APPEND_SQL, *params)
        ok = {str(r["run_id"]) for r in rows}
        for a in batch:
            if a.run_id in ok and not a.simple:
                await _extras_txn(conn, a)
    return ok


class EventWriter:
    """Collects appends and commits them in batches (group commit), several batches in flight."""

    def __init__(self, pool: asyncpg.Pool, worker_id: str, *, max_batch: int = 256, parallel: int = 4) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._queue: list[Append] = []
        self._wakeup = asyncio.Event()
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(parallel)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="event-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        for a in self._queue:
            if a.future and not a.future.done():
                a.future.set_exception(ConnectionError("event writer stopped"))
        self._queue.clear()

    async def append(self, a: Append) -> bool:
        """Queue an append and wait for its commit. True: committed. False: fenced (lease lost).

        Raises the store's exception when Postgres failed (outcome unknown: the caller reloads).
        """
        a.future = asyncio.get_running_loop().create_future()
        self._queue.append(a)
        self._wakeup.set()
        return await a.future

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._slots.acquire()
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                task = asyncio.create_task(self._flush(batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _flush(self, batch: list[Append]) -> None:
        try:
            async with self._pool.acquire() as conn:
                ok = await write_batch(conn, self._worker_id, batch)
        except BaseException as exc:
            for a in batch:
                if a.future and not a.future.done():
                    a.future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        else:
            for a in batch:
                if a.future and not a.future.done():
                    a.future.set_result(a.run_id in ok)
        finally:
            self._slots.release()
