"""Group commit of run events: appends from many runs share one round trip and one transaction.

Every append is fenced: it commits only if the worker still owns the run at the epoch it holds. The end of a
run with a concurrency key (`EventWriter.keyed`) commits in the transaction that admits the next queued runs
of its key (worker/store/concurrency.py); runs made startable are handed to `on_commit` after the commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from worker.notify import outbox
from worker.runlog import Event
from worker.store import concurrency, waits
from worker.store.concurrency import Admission
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
    """The run's error when it finished; while it lives, the last error of a step backing off (or None)."""
    finished: bool = False
    wake_at: float | None = None
    """While it lives: when a step backing off between attempts tries again (shown as `next in 12s`)."""


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
    admission: Admission | None = None
    """Its concurrency key (rendered from its plaintext inputs); its priority is its parent's."""


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
    notices: list[outbox.OutboxRow] = field(default_factory=list)
    """Notifications this commit causes (worker/notify): written last in its transaction."""

    @property
    def simple(self) -> bool:
        return not (self.tasks or self.children or self.waits or self.cancel_tasks or self.signal_parent
                    or self.notices)


_APPEND_SQL = """
WITH req AS (
    SELECT * FROM unnest($2::uuid[], $3::bigint[]) AS r(run_id, epoch)
), ok AS (
    SELECT runs.run_id, runs.history_at FROM runs JOIN req ON runs.run_id = req.run_id AND runs.lease_epoch = req.epoch
    WHERE runs.lease_owner = $1
    FOR NO KEY UPDATE OF runs
), ins AS (
    INSERT INTO events (run_id, seq, ts, type, step_id, item, attempt, data, history_at)
    SELECT e.run_id, e.seq, to_timestamp(e.ts), e.type, e.step_id, e.item, e.attempt, e.data, ok.history_at
    FROM unnest($4::uuid[], $5::int[], $6::float8[], $7::text[], $8::text[], $9::int[], $10::int[], $11::jsonb[])
         AS e(run_id, seq, ts, type, step_id, item, attempt, data)
    JOIN ok ON ok.run_id = e.run_id
    RETURNING 1
), upd AS (
    UPDATE runs SET status = u.status, current_step = u.current_step, waiting_on = u.waiting_on,
           output = CASE WHEN u.finished THEN u.output::jsonb ELSE runs.output END,
           error = u.error,
           finished_at = CASE WHEN u.finished THEN now() ELSE runs.finished_at END,
           lease_owner = CASE WHEN u.finished THEN NULL ELSE runs.lease_owner END,
           lease_expires = CASE WHEN u.finished THEN NULL ELSE runs.lease_expires END,
           wake_at = CASE WHEN u.finished THEN NULL ELSE coalesce(to_timestamp(u.wake_at), runs.wake_at) END,
           next_seq = u.next_seq, updated_at = now()
    FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[],
                $19::int[], $20::float8[]) AS u(run_id, status, current_step, waiting_on, output, error, finished,
                                                next_seq, wake_at)
    WHERE runs.run_id = u.run_id AND runs.run_id IN (SELECT run_id FROM ok)
    RETURNING 1
)
SELECT run_id FROM ok
"""


def _params(worker_id: str, batch: list[Append]) -> list[Any]:
    ev_cols: list[list[Any]] = [[], [], [], [], [], [], [], []]
    up_cols: list[list[Any]] = [[], [], [], [], [], [], [], [], []]
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
                                        u.finished, next_seq, u.wake_at), strict=True):
            col.append(value)
    return [worker_id, [a.run_id for a in batch], [a.epoch for a in batch], *ev_cols, *up_cols]


@dataclass(slots=True)
class Woken:
    """What a batch's commit must tell the workers: runs made startable (run id, priority), runs asked to cancel."""

    wake: list[tuple[str, str]] = field(default_factory=list)
    signal: list[str] = field(default_factory=list)


async def _extras_txn(conn: asyncpg.Connection, a: Append, woken: Woken) -> None:
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
        admitted = await insert_run_txn(
            conn, run_id=c.run_id, workflow=c.workflow, def_hash=c.def_hash, inputs=c.inputs, created=c.created,
            requested_by=f"run:{a.run_id}", parent_run_id=a.run_id, parent_step=c.parent_step,
            parent_item=c.parent_item, admission=c.admission)
        if admitted is not None:
            woken.wake += admitted.wake
            woken.signal += admitted.signal
    for w in a.waits:
        await waits.register_txn(conn, a.run_id, w.step_id, w.item, w.attempt, w.name, w.key, w.since, w.deadline)
    if a.cancel_tasks:
        await conn.execute(
            """UPDATE human_tasks SET status = 'cancelled', decided_at = now(), reason = 'run cancelled'
               WHERE run_id = $1 AND status = 'pending'""", a.run_id)
        await waits.cancel_txn(conn, a.run_id)
    if a.signal_parent:
        await signal_run_txn(conn, a.signal_parent)


async def write_batch(conn: asyncpg.Connection, worker_id: str, batch: list[Append], *,
                      keyed: dict[str, tuple[str, str]] | None = None, woken: Woken | None = None) -> set[str]:
    """Commit a batch; returns the run ids whose appends committed (the others were fenced out).

    `keyed`: (workflow, concurrency key) of runs that hold a slot; their ends promote their keys' queues in
    this transaction. What must be told to the workers after the commit is added to `woken`."""
    params = _params(worker_id, batch)
    releasing = {a.run_id: keyed[a.run_id] for a in batch if a.update.finished and keyed and a.run_id in keyed}
    if not releasing and all(a.simple for a in batch):
        rows = await conn.fetch(_APPEND_SQL, *params)
        return {str(r["run_id"]) for r in rows}
    woken = woken if woken is not None else Woken()
    child_keys = {(c.workflow, c.admission.key) for a in batch for c in a.children
                  if c.admission is not None and c.admission.key is not None}
    async with conn.transaction():
        # the waits' locks, then the concurrency keys' locks, before any run row: the order an event's delivery
        # and a run's admission take them in (no deadlock)
        await waits.lock_txn(conn, [(w.name, w.key) for a in batch for w in a.waits])
        await concurrency.lock_txn(conn, set(releasing.values()) | child_keys)
        rows = await conn.fetch(_APPEND_SQL, *params)
        ok = {str(r["run_id"]) for r in rows}
        for a in batch:
            if a.run_id in ok and not a.simple:
                await _extras_txn(conn, a, woken)
        for workflow, key in sorted({slot for run_id, slot in releasing.items() if run_id in ok}):
            woken.wake += await concurrency.promote_txn(conn, workflow, key)
        await outbox.insert_txn(conn, [n for a in batch if a.run_id in ok for n in a.notices])
    return ok


class EventWriter:
    """Collects appends and commits them in batches (group commit), several batches in flight."""

    def __init__(self, pool: asyncpg.Pool, worker_id: str, *, max_batch: int = 256, parallel: int = 4,
                 on_commit: Callable[[list[tuple[str, str]], list[str]], None] | None = None) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._on_commit = on_commit
        self.keyed: dict[str, tuple[str, str]] = {}
        """(workflow, concurrency key) of the runs this worker drives that hold a slot (set by the service)."""
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
        if not self._queue and not self._inflight and self._task is not None:
            # nothing else is being written: its own flush at once, without waiting for the writer's loop to
            # wake up first (a sequential run's every step waits for this commit). A task of its own still:
            # the write goes on if the caller is cancelled. Appends made meanwhile queue and are batched.
            await self._slots.acquire()  # free (nothing in flight): no suspension
            self._start_flush([a])
            return await a.future
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
                self._start_flush(batch)

    def _start_flush(self, batch: list[Append]) -> None:
        """With a slot acquired."""
        task = asyncio.create_task(self._flush(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _flush(self, batch: list[Append]) -> None:
        try:
            woken = Woken()
            async with self._pool.acquire() as conn:
                ok = await write_batch(conn, self._worker_id, batch, keyed=self.keyed, woken=woken)
            if self._on_commit is not None and (woken.wake or woken.signal):
                self._on_commit(woken.wake, woken.signal)
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
