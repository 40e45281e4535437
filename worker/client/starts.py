"""RuntimeClient, part starts: starting runs, one (`start`, `start_run`, `start_run_once`) or many (`start_runs`).

A run starts with a priority (`priority=`, else its workflow's `priority:`, else normal) and, when its workflow
has `concurrency:`, its key rendered from its inputs: it is then admitted at once (`pending`), queued behind the
key's other runs (`queued`), or cancelled at once (`cancelled`, `on_full: cancel_newest`); see
worker/store/concurrency.py. Whatever it became, the workers are told after the commit (the work stream of its
priority; runs asked to cancel for `on_full: cancel_oldest` get a signal).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from worker import runlog as ev
from worker.client.base import ClientBase, check_idempotency_key
from worker.definitions.flow import check_priority
from worker.engine.admission import admission_for
from worker.engine.inputs import InputError, resolve_inputs
from worker.errors import Conflict, InvalidRequest, WorkerError
from worker.models import RunId
from worker.secrets.transit import seal_fields
from worker.store import concurrency
from worker.store import runs as store
from worker.store.concurrency import Admitted


class StartedRun(NamedTuple):
    run_id: RunId
    created: bool
    """False: the Idempotency-Key was used before; this is that run."""
    status: str
    """pending | queued | cancelled for a new run; `existing` for the run an Idempotency-Key started before."""


class StartsApi(ClientBase):
    """Starting runs."""

    async def start_run(self, workflow: str, inputs: dict[str, Any] | None = None, *,
                        requested_by: str | None = None, traceparent: str | None = None,
                        priority: str | None = None) -> RunId:
        """Start a run; `traceparent` (W3C) makes its trace part of the caller's; `priority`: high | normal | low
        (default: the workflow's)."""
        started = await self.start(workflow, inputs, requested_by=requested_by, traceparent=traceparent,
                                   priority=priority)
        return started.run_id

    async def start_run_once(self, workflow: str, inputs: dict[str, Any] | None = None, *,
                             idempotency_key: str | None = None, requested_by: str | None = None,
                             traceparent: str | None = None, trigger: dict[str, Any] | None = None,
                             priority: str | None = None) -> tuple[RunId, bool]:
        """`start`, as (run id, created)."""
        started = await self.start(workflow, inputs, idempotency_key=idempotency_key, requested_by=requested_by,
                                   traceparent=traceparent, trigger=trigger, priority=priority)
        return started.run_id, started.created

    async def start(self, workflow: str, inputs: dict[str, Any] | None = None, *,
                    idempotency_key: str | None = None, requested_by: str | None = None,
                    traceparent: str | None = None, trigger: dict[str, Any] | None = None,
                    priority: str | None = None) -> StartedRun:
        """Start a run: (its id, True, its status) — or, when this caller already started one with
        `idempotency_key`, (that run's id, False, "existing"). The same key with another workflow, other inputs
        or another priority is a Conflict. Concurrent calls with one key start one run (the key's row is written
        in the run's own transaction). `trigger` (`{"kind": ...}`) records what started it (default: `api` for a
        caller of the HTTP API)."""
        traceparent = _check_traceparent(traceparent)
        check_priority(priority)
        request_hash = None
        check_idempotency_key(idempotency_key)
        if idempotency_key is not None:
            request = {"workflow": workflow, "inputs": inputs or {}, **({"priority": priority} if priority else {})}
            request_hash = hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()
            existing = await self._requested_run(idempotency_key, request_hash)
            if existing is not None:
                return StartedRun(existing, False, "existing")
        def_hash, defn = await self._active_definition(workflow)
        try:
            resolved = resolve_inputs(defn.spec, inputs or {})
        except InputError as exc:
            raise WorkerError(f"{workflow}: {exc}") from exc
        admission = await admission_for(defn, resolved, priority=priority)  # from the plaintext inputs
        run_id = str(uuid.uuid4())
        data: dict[str, Any] = {"workflow": workflow, "def_hash": def_hash, "inputs": resolved,
                                "requested_by": requested_by or str(self.identity)}
        if trigger is not None:
            data["trigger"] = trigger
        elif self.identity.via is not None:
            data["trigger"] = {"kind": "api", "via": self.identity.via}
        created = ev.Event(ev.RUN_CREATED, time.time(), data=data)
        if self._encrypts(defn):
            await seal_fields(self.cipher, [created.data])
            resolved = created.data["inputs"]
        claimed = True  # the run is ours to create (no key, or the key's row was written by this call)
        admitted: Admitted | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            if idempotency_key is not None:
                # a concurrent call with the key waits here until the first commits, then finds its row
                claimed = await conn.fetchval(
                    """INSERT INTO run_requests (principal, idem_key, request_hash, run_id) VALUES ($1, $2, $3, $4)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    self.identity.user, idempotency_key, request_hash, run_id) is not None
            if claimed:
                admitted = await store.insert_run_txn(
                    conn, run_id=run_id, workflow=workflow, def_hash=def_hash, inputs=resolved, created=created,
                    requested_by=requested_by or str(self.identity), traceparent=traceparent, admission=admission)
        if not claimed:
            assert idempotency_key is not None and request_hash is not None
            existing = await self._requested_run(idempotency_key, request_hash)
            assert existing is not None
            return StartedRun(existing, False, "existing")
        assert admitted is not None
        await self._nudge_admitted([admitted])
        return StartedRun(RunId(run_id), True, admitted.status)

    async def _requested_run(self, key: str, request_hash: str) -> RunId | None:
        row = await self.pool.fetchrow(
            "SELECT request_hash, run_id::text FROM run_requests WHERE principal = $1 AND idem_key = $2",
            self.identity.user, key)
        if row is None:
            return None
        if row["request_hash"] != request_hash:
            raise Conflict(f"idempotency key {key!r} was used for another request (run {row['run_id']}): "
                           "use a new key for a different workflow or inputs")
        return RunId(row["run_id"])

    async def start_runs(self, workflow: str, inputs: list[dict[str, Any]], *,
                         requested_by: str | None = None, traceparent: str | None = None,
                         priority: str | None = None) -> list[RunId]:
        """Start many runs of one workflow in one transaction (bulk start); returns their ids in order.

        With `traceparent` (W3C), every run's trace is part of the caller's trace. With a concurrency key, the
        runs are admitted one by one in order (each may be queued or, for cancel_newest, cancelled)."""
        traceparent = _check_traceparent(traceparent)
        def_hash, defn = await self._active_definition(workflow)
        who = requested_by or str(self.identity)
        resolved = []
        for i, given in enumerate(inputs):
            try:
                resolved.append(resolve_inputs(defn.spec, given))
            except InputError as exc:
                raise WorkerError(f"{workflow}: run {i}: {exc}") from exc
        admissions = [await admission_for(defn, r, priority=priority) for r in resolved]
        if self._encrypts(defn):
            holders = [{"inputs": r} for r in resolved]
            await seal_fields(self.cipher, holders)
            resolved = [h["inputs"] for h in holders]
        ids = [str(uuid.uuid4()) for _ in resolved]
        now = datetime.now(tz=UTC)
        trigger = None if self.identity.via is None else {"kind": "api", "via": self.identity.via}
        created = [{"workflow": workflow, "def_hash": def_hash, "inputs": r, "requested_by": who,
                    **({"trigger": trigger} if trigger else {})} for r in resolved]
        if defn.spec.concurrency is not None:
            admitted: list[Admitted] = []
            async with self.pool.acquire() as conn, conn.transaction():
                await concurrency.lock_txn(conn, {(workflow, a.key) for a in admissions if a.key is not None})
                for run_id, inp, data, adm in zip(ids, resolved, created, admissions, strict=True):
                    done = await store.insert_run_txn(
                        conn, run_id=run_id, workflow=workflow, def_hash=def_hash, inputs=inp,
                        created=ev.Event(ev.RUN_CREATED, now.timestamp(), data=data), requested_by=who,
                        traceparent=traceparent, admission=adm)
                    assert done is not None
                    admitted.append(done)
            await self._nudge_admitted(admitted)
            return [RunId(i) for i in ids]
        chosen = admissions[0].priority if admissions else "normal"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO runs (run_id, workflow, def_hash, inputs, requested_by, enqueued_at, next_seq,
                                     traceparent, trigger, priority)
                   SELECT id, $2, $3, inp, $4, now(), 2, $6, $7, $8
                     FROM unnest($1::uuid[], $5::jsonb[]) AS t(id, inp)""",
                ids, workflow, def_hash, who, resolved, traceparent, trigger and "api", chosen)
            await conn.execute(
                """INSERT INTO events (run_id, seq, ts, type, data, history_at)
                   SELECT id, 1, $2, $3, d, r.history_at FROM unnest($1::uuid[], $4::jsonb[]) AS t(id, d)
                   JOIN runs r ON r.run_id = t.id""",
                ids, now, ev.RUN_CREATED, created)
        await self._nudge_admitted([Admitted("pending", chosen or "normal", wake=[(i, chosen or "normal")])
                                    for i in ids])
        return [RunId(i) for i in ids]


def _check_traceparent(value: str | None) -> str | None:
    """A valid W3C traceparent (normalised), None for None; anything else is a usage error."""
    if value is None:
        return None
    from worker.telemetry.ids import parse_traceparent

    ctx = parse_traceparent(value)
    if ctx is None:
        raise InvalidRequest(f"traceparent {value!r} is not a valid W3C trace context "
                             "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)")
    return ctx.header()
