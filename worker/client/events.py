"""RuntimeClient, part events: events from the outside world start the runs of the workflows that subscribe,
and resume the runs whose `wait` step waits for them.

`send_event(name, key, data)`: every active workflow with `on: {event: {name: NAME}}` gets a run whose
inputs are the event's `data` (validated against the workflow's `inputs:` like any start; a workflow
whose inputs the data does not satisfy, or whose concurrency key they cannot render, is reported as
refused, the others start; a started run may be queued behind its concurrency key). The event, the runs
it started and the refusals are written in one transaction, so a sender's `idempotency_key` replays the
delivery (same event id, same runs) instead of repeating it, however many times it is sent at once.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from worker import runlog as ev
from worker.client.base import ClientBase, check_idempotency_key
from worker.definitions.model import Definition
from worker.definitions.schema import EVENT_NAME
from worker.engine.admission import admission_for
from worker.engine.inputs import InputError, resolve_inputs
from worker.errors import Conflict, WorkerError
from worker.models import RunId
from worker.oversight import audit
from worker.secrets.transit import seal_fields
from worker.store import concurrency, waits
from worker.store import runs as store
from worker.store.concurrency import Admission, Admitted

_NAME = re.compile(EVENT_NAME)
MAX_KEY = 500


@dataclass(frozen=True, slots=True)
class EventDelivery:
    event_id: str
    name: str
    key: str | None
    started: tuple[RunId, ...]
    """Runs the event started (one per subscribed workflow whose inputs the data satisfies)."""
    refused: tuple[dict[str, str], ...]
    """Subscribed workflows that did not start: `{"workflow", "reason"}`."""
    delivered_to: tuple[RunId, ...] = ()
    """Waiting runs the event resumed (`uses: wait`)."""
    replayed: bool = False
    """True: the idempotency key was used before; this is that delivery."""


@dataclass(frozen=True, slots=True)
class EventWait:
    """A run parked in a `wait` step."""

    run_id: RunId
    workflow: str
    step_id: str
    item: int | None
    name: str
    key: str | None
    """None: any event of the name resumes it."""
    deadline: datetime | None
    waiting_since: datetime


class EventsApi(ClientBase):
    """Sending events: `send_event`, and the workflows that subscribe to a name."""

    async def subscribers(self, name: str) -> list[tuple[str, str, Definition]]:
        """(workflow, def_hash, definition) of every active workflow with `on: {event: {name: NAME}}`."""
        rows = await self.pool.fetch(
            """SELECT name, def_hash, spec FROM (
                   SELECT DISTINCT ON (f.name) f.name, d.def_hash, d.spec, f.status
                     FROM workflow_files f JOIN definitions d ON d.def_hash = f.def_hash
                    ORDER BY f.name, f.updated_at DESC) active
                WHERE status <> 'deleted' AND spec -> 'on' -> 'event' ->> 'name' = $1
                ORDER BY name""", name)
        found = []
        for r in rows:
            defn = self._definitions.get(r["def_hash"])
            if defn is None:
                defn = self._definitions[r["def_hash"]] = Definition.from_json(r["spec"])
            found.append((r["name"], r["def_hash"], defn))
        return found

    async def send_event(self, name: str, key: str | None = None, data: dict[str, Any] | None = None, *,
                         idempotency_key: str | None = None) -> EventDelivery:
        if not isinstance(name, str) or not _NAME.match(name):
            raise WorkerError(f"event name {name!r}: 1-200 characters, letters, digits and _ . : - "
                              "(e.g. ticket.created)")
        if key is not None and (len(key) > MAX_KEY or not key.isprintable()):
            raise WorkerError(f"an event key is at most {MAX_KEY} printable characters")
        check_idempotency_key(idempotency_key)
        data = data or {}
        sender = self.identity.user
        if idempotency_key is not None:
            replay = await self._delivery(sender, idempotency_key, name, key, data)
            if replay is not None:
                return replay
        event_id = str(uuid.uuid4())
        trigger = {"kind": "event", "event_id": event_id, "name": name, "key": key}
        planned: list[tuple[str, str, str, dict[str, Any], ev.Event, Admission]] = []
        refused: list[dict[str, str]] = []
        for workflow, def_hash, defn in await self.subscribers(name):
            try:
                inputs = resolve_inputs(defn.spec, data)
                admission = await admission_for(defn, inputs)
            except (InputError, WorkerError) as exc:
                refused.append({"workflow": workflow, "reason": str(exc)})
                continue
            created = ev.Event(ev.RUN_CREATED, time.time(),
                               data={"workflow": workflow, "def_hash": def_hash, "inputs": inputs,
                                     "requested_by": f"event:{name}", "trigger": trigger})
            if self._encrypts(defn):
                await seal_fields(self.cipher, [created.data])
                inputs = created.data["inputs"]
            planned.append((str(uuid.uuid4()), workflow, def_hash, inputs, created, admission))
        delivered: list[str] = []
        admitted: list[Admitted] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await waits.lock_event_txn(conn, name, key)  # first: the lock order of store/waits.py
            await concurrency.lock_txn(conn, {(p[1], p[5].key) for p in planned if p[5].key is not None})
            inserted = await conn.fetchval(
                """INSERT INTO external_events (event_id, name, key, data, sent_by, idem_key, started, refused)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::uuid[], $8) ON CONFLICT DO NOTHING RETURNING true""",
                event_id, name, key, data, sender, idempotency_key, [p[0] for p in planned], refused)
            if inserted:
                for run_id, workflow, def_hash, inputs, created, admission in planned:
                    done = await store.insert_run_txn(conn, run_id=run_id, workflow=workflow, def_hash=def_hash,
                                                      inputs=inputs, created=created, requested_by=f"event:{name}",
                                                      admission=admission)
                    if done is not None:
                        admitted.append(done)
                if self.identity.via is None:
                    # a person at the terminal (CLI, console): audited; API sends are on record in
                    # external_events with their token's principal. Before deliver_txn: lock order.
                    await audit.append_txn(conn, self.identity, "send-event", outcome="sent",
                                           decision={"event_id": event_id, "name": name, "key": key})
                delivered = await waits.deliver_txn(conn, event_id, name, key)
        if not inserted:  # a concurrent send with the key committed first: that delivery is the delivery
            assert idempotency_key is not None
            replay = await self._delivery(sender, idempotency_key, name, key, data)
            assert replay is not None
            return replay
        await self._nudge_admitted(admitted)
        for run_id in delivered:
            await self._nudge(run_id, signal=True)
        return EventDelivery(event_id, name, key, tuple(RunId(p[0]) for p in planned), tuple(refused),
                             tuple(RunId(r) for r in delivered))

    async def open_waits(self, *, name: str | None = None, key: str | None = None, run_id: str | None = None,
                         limit: int = 200) -> list[EventWait]:
        """Runs whose `wait` step is waiting (oldest first), optionally for one event name/key or one run."""
        if run_id is not None:
            run_id = await self.resolve_run_id(run_id)
        rows = await waits.open_waits(self.pool, name=name, key=key, run_id=run_id, limit=limit)
        return [EventWait(RunId(r["run_id"]), r["workflow"], r["step_id"], r["item"], r["name"], r["key"],
                          r["deadline"], r["since"])
                for r in rows if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def _delivery(self, sender: str, idempotency_key: str, name: str, key: str | None,
                        data: dict[str, Any]) -> EventDelivery | None:
        row = await self.pool.fetchrow(
            """SELECT event_id::text, name, key, data, started::text[] AS started, refused,
                      delivered_to::text[] AS delivered_to FROM external_events
                WHERE sent_by = $1 AND idem_key = $2""", sender, idempotency_key)
        if row is None:
            return None
        same = (row["name"], row["key"], orjson.dumps(row["data"], option=orjson.OPT_SORT_KEYS)) == (
            name, key, orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
        if not same:
            raise Conflict(f"idempotency key {idempotency_key!r} was used for another event "
                           f"({row['event_id']}): use a new key for a different event")
        return EventDelivery(row["event_id"], row["name"], row["key"], tuple(RunId(r) for r in row["started"]),
                             tuple(row["refused"]), tuple(RunId(r) for r in row["delivered_to"]), replayed=True)
