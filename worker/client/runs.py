"""RuntimeClient, part runs: start (one or many), list, count, get, cancel, wait for and replay runs.

A run's detail shows unfinished agent steps with their progress so far (tokens, cost and a short copy of
each LLM turn and tool call, read from the step journal).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.exceptions import RedisError

from worker.bus.streams import WORK_MAXLEN
from worker.client.base import ClientBase, check_idempotency_key
from worker.engine import events as ev
from worker.engine.inputs import InputError, resolve_inputs
from worker.engine.views import step_views
from worker.errors import Conflict, InvalidRequest, NotFound, WorkerError
from worker.models import EventView, RunDetail, RunId, RunStatus, RunSummary, StepStatus, StepView
from worker.oversight import audit
from worker.secrets.transit import seal_fields
from worker.store import runs as store

_RUN_COLS = """run_id::text, workflow, def_hash, status, created_at, updated_at, finished_at, current_step,
               waiting_on, parent_run_id::text, error, trigger, wake_at"""


def _summary(r: asyncpg.Record) -> RunSummary:
    return RunSummary(RunId(r["run_id"]), r["workflow"], r["def_hash"], RunStatus(r["status"]), r["created_at"],
                      r["updated_at"], r["finished_at"], r["current_step"], r["waiting_on"],
                      RunId(r["parent_run_id"]) if r["parent_run_id"] else None, r["error"], r["trigger"],
                      r["wake_at"] if r["status"] == "waiting" else None)


RUN_ORDERS: dict[str, str] = {
    "newest": "created_at DESC",
    "oldest": "created_at ASC",
    "longest": "coalesce(finished_at, now()) - created_at DESC, created_at DESC",
    "workflow": "workflow ASC, created_at DESC",
}
"""The orders `list_runs` knows, by name (the SQL is fixed here: never built from input)."""


class RunsApi(ClientBase):
    """Starting, reading, cancelling, waiting for and replaying runs."""

    async def start_run(self, workflow: str, inputs: dict[str, Any] | None = None, *,
                        requested_by: str | None = None, traceparent: str | None = None) -> RunId:
        """Start a run; `traceparent` (W3C) makes its trace part of the caller's."""
        run_id, _ = await self.start_run_once(workflow, inputs, requested_by=requested_by, traceparent=traceparent)
        return run_id

    async def start_run_once(self, workflow: str, inputs: dict[str, Any] | None = None, *,
                             idempotency_key: str | None = None, requested_by: str | None = None,
                             traceparent: str | None = None,
                             trigger: dict[str, Any] | None = None) -> tuple[RunId, bool]:
        """Start a run; (its id, True) — or, when this caller already started one with `idempotency_key`,
        (that run's id, False). The same key with another workflow or other inputs is a Conflict. Concurrent
        calls with one key start one run (the key's row is written in the run's own transaction).
        `trigger` (`{"kind": ...}`) records what started it (default: `api` for a caller of the HTTP API)."""
        traceparent = _check_traceparent(traceparent)
        request_hash = None
        check_idempotency_key(idempotency_key)
        if idempotency_key is not None:
            request_hash = hashlib.sha256(orjson.dumps({"workflow": workflow, "inputs": inputs or {}},
                                                       option=orjson.OPT_SORT_KEYS)).hexdigest()
            existing = await self._requested_run(idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        def_hash, defn = await self._active_definition(workflow)
        try:
            resolved = resolve_inputs(defn.spec, inputs or {})
        except InputError as exc:
            raise WorkerError(f"{workflow}: {exc}") from exc
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
        async with self.pool.acquire() as conn, conn.transaction():
            if idempotency_key is not None:
                # a concurrent call with the key waits here until the first commits, then finds its row
                claimed = await conn.fetchval(
                    """INSERT INTO run_requests (principal, idem_key, request_hash, run_id) VALUES ($1, $2, $3, $4)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    self.identity.user, idempotency_key, request_hash, run_id) is not None
            if claimed:
                await store.insert_run_txn(conn, run_id=run_id, workflow=workflow, def_hash=def_hash,
                                           inputs=resolved, created=created,
                                           requested_by=requested_by or str(self.identity), traceparent=traceparent)
        if not claimed:
            assert idempotency_key is not None and request_hash is not None
            existing = await self._requested_run(idempotency_key, request_hash)
            assert existing is not None
            return existing, False
        await self._nudge(run_id)
        return RunId(run_id), True

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
                         requested_by: str | None = None, traceparent: str | None = None) -> list[RunId]:
        """Start many runs of one workflow in one transaction (bulk start); returns their ids in order.

        With `traceparent` (W3C), every run's trace is part of the caller's trace."""
        traceparent = _check_traceparent(traceparent)
        def_hash, defn = await self._active_definition(workflow)
        who = requested_by or str(self.identity)
        resolved = []
        for i, given in enumerate(inputs):
            try:
                resolved.append(resolve_inputs(defn.spec, given))
            except InputError as exc:
                raise WorkerError(f"{workflow}: run {i}: {exc}") from exc
        if self._encrypts(defn):
            holders = [{"inputs": r} for r in resolved]
            await seal_fields(self.cipher, holders)
            resolved = [h["inputs"] for h in holders]
        ids = [str(uuid.uuid4()) for _ in resolved]
        now = datetime.now(tz=UTC)
        trigger = None if self.identity.via is None else {"kind": "api", "via": self.identity.via}
        created = [{"workflow": workflow, "def_hash": def_hash, "inputs": r, "requested_by": who,
                    **({"trigger": trigger} if trigger else {})} for r in resolved]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO runs (run_id, workflow, def_hash, inputs, requested_by, enqueued_at, next_seq,
                                     traceparent, trigger)
                   SELECT id, $2, $3, inp, $4, now(), 2, $6, $7 FROM unnest($1::uuid[], $5::jsonb[]) AS t(id, inp)""",
                ids, workflow, def_hash, who, resolved, traceparent, trigger and "api")
            await conn.execute(
                """INSERT INTO events (run_id, seq, ts, type, data)
                   SELECT id, 1, $2, $3, d FROM unnest($1::uuid[], $4::jsonb[]) AS t(id, d)""",
                ids, now, ev.RUN_CREATED, created)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.xadd(self.keys.work, {"run": run_id}, maxlen=WORK_MAXLEN, approximate=True)
                await pipe.execute()
        except (RedisError, OSError):
            pass  # the reconciler re-derives the work from Postgres
        return [RunId(i) for i in ids]

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
                        before: datetime | None = None, search: str | None = None,
                        order: str = "newest") -> list[RunSummary]:
        """Runs in `order` (RUN_ORDERS: newest first by default). `search`: a case-insensitive POSIX regex over
        run id, workflow, current step, error."""
        if order not in RUN_ORDERS:
            raise WorkerError(f"unknown run order {order!r}; one of {', '.join(RUN_ORDERS)}")
        rows = await self.pool.fetch(
            f"""SELECT {_RUN_COLS} FROM runs
                WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
                  AND ($4::timestamptz IS NULL OR created_at < $4)
                  AND ($5::text IS NULL OR run_id::text ~* $5 OR workflow ~* $5 OR current_step ~* $5
                       OR error ~* $5)
                ORDER BY {RUN_ORDERS[order]} LIMIT $3""",
            status, workflow, limit, before, search)
        return [_summary(r) for r in rows if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def count_runs(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) AS n FROM runs GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    async def get_run(self, run_id: str) -> RunDetail:
        run_id = await self.resolve_run_id(run_id)
        row = await self.pool.fetchrow(f"SELECT {_RUN_COLS}, inputs, output FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        events = await store.load_events(self.pool, run_id)
        spec_row = await self.pool.fetchrow("SELECT spec FROM definitions WHERE def_hash = $1", row["def_hash"])
        steps_spec = (spec_row["spec"] if spec_row else {}).get("steps", [])
        kinds = {s["id"]: s["uses"] for s in steps_spec}
        order = [s["id"] for s in steps_spec]
        children = await self.pool.fetch(
            "SELECT run_id::text FROM runs WHERE parent_run_id = $1 ORDER BY created_at", run_id)
        payload = {"inputs": row["inputs"], "output": row["output"]}
        await self._open_for_display([payload, *(e.data for e in events)])
        steps = await self._with_agent_progress(run_id, step_views(run_id, events, kinds, order))
        return RunDetail(
            summary=_summary(row), inputs=payload["inputs"], output=payload["output"],
            steps=tuple(steps),
            events=tuple(EventView(e.seq, datetime.fromtimestamp(e.ts, tz=UTC), e.type, e.step_id, e.item,
                                   e.attempt, e.data) for e in events),
            children=tuple(RunId(r["run_id"]) for r in children),
        )

    async def events_after(self, run_id: str, after_seq: int = 0, *,
                           limit: int = 500) -> tuple[RunSummary, list[EventView]]:
        """The run (for its status) and its committed events with `seq > after_seq`, in order: what a client
        that has seen up to `after_seq` has not (an SSE stream resumes from here without gaps or repeats)."""
        run_id = await self.resolve_run_id(run_id)
        row = await self.pool.fetchrow(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        rows = await self.pool.fetch(
            """SELECT seq, ts, type, step_id, item, attempt, data FROM events
                WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""", run_id, after_seq, limit)
        events = [store.row_to_event(r) for r in rows]
        await self._open_for_display([e.data for e in events])
        return _summary(row), [EventView(e.seq, datetime.fromtimestamp(e.ts, tz=UTC), e.type, e.step_id, e.item,
                                         e.attempt, e.data) for e in events]

    async def _with_agent_progress(self, run_id: str, steps: list[StepView]) -> list[StepView]:
        """Unfinished agent steps with the tokens and cost of the LLM turns their journal holds so far,
        and a short copy of each LLM turn and tool call in it (`calls`, in order)."""
        unfinished = {(v.step_id, -1 if v.item is None else v.item) for v in steps
                      if v.kind == "agent" and v.output is None and v.status != StepStatus.PENDING}
        if not unfinished:
            return steps
        rows = await self.pool.fetch(
            """SELECT step_id, item, call_index, data FROM step_journal
                WHERE run_id = $1 AND step_id = ANY($2::text[]) ORDER BY step_id, item, call_index""",
            run_id, sorted({s for s, _ in unfinished}))
        entries = [((r["step_id"], r["item"]), r["call_index"], {"output": r["data"]}) for r in rows
                   if (r["step_id"], r["item"]) in unfinished]
        await self._open_for_display([holder for _, _, holder in entries])
        progress: dict[tuple[str, int], dict[str, Any]] = {}
        for key, index, holder in entries:
            turn = holder["output"]
            call = _journal_call(index, turn, progress[key]["calls"] if key in progress else [])
            if call is None or (call["type"] == "llm" and not isinstance(turn.get("usage"), dict)):
                continue
            p = progress.setdefault(key, {"usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                                          "cost_usd": None, "turns": 0, "calls": []})
            p["calls"].append(call)
            if call["type"] != "llm":
                continue
            p["turns"] += 1
            for k in p["usage"]:
                p["usage"][k] += int(turn["usage"].get(k) or 0)
            if isinstance(turn.get("cost_usd"), int | float):
                p["cost_usd"] = round((p["cost_usd"] or 0.0) + float(turn["cost_usd"]), 8)
        return [replace(v, progress=progress.get((v.step_id, -1 if v.item is None else v.item))) for v in steps]

    async def cancel(self, run_id: str, *, by: str | None = None, reason: str | None = None) -> RunSummary:
        run_id = await self.resolve_run_id(run_id)
        who = self._actor(by)
        workflow = await self.pool.fetchval("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if workflow is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(who, "cancel", workflow, run_id=run_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE runs SET cancel_requested = true, cancel_reason = $2,
                           signal_version = signal_version + 1, updated_at = now()
                    WHERE run_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
                    RETURNING {_RUN_COLS}""",
                run_id, f"cancelled by {who}" + (f": {reason}" if reason else ""))
            if row is not None:
                await audit.append_txn(conn, who, "cancel", run_id=run_id, workflow=workflow,
                                       seen={"status": row["status"], "current_step": row["current_step"]},
                                       reason=reason)
        if row is None:
            current = await self.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
            raise Conflict(f"run {run_id} is already {current}")
        await self._nudge(run_id, signal=True)
        return _summary(row)

    async def wait_for_run(self, run_id: str, timeout: float | None = None,  # noqa: ASYNC109
                           poll: float = 0.2) -> RunSummary:
        """Wait until the run is finished; TimeoutError after `timeout` seconds (None: forever)."""
        run_id = await self.resolve_run_id(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = await self.pool.fetchrow(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = $1", run_id)
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            summary = _summary(row)
            if summary.status.terminal:
                return summary
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {summary.status.value} after {timeout}s")
            await asyncio.sleep(poll)

    # -- replay and bulk operations ----------------------------------------------------------
    async def replay(self, run_id: str, *, from_step: str | None = None, inputs: dict[str, Any] | None = None,
                     latest: bool = False, dry_run: bool = False, by: str | None = None) -> tuple[Any, RunId | None]:
        """Plan (and unless `dry_run`, start) a replay of a run; returns (plan, new run id)."""
        from worker.oversight.replay import create_replay, plan_as_dict, plan_replay

        run_id = await self.resolve_run_id(run_id)
        who = self._actor(by)
        workflow = await self.pool.fetchval("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if workflow is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(who, "replay", workflow, run_id=run_id)
        try:
            plan = await plan_replay(self.pool, run_id, from_step=from_step, inputs=inputs, latest=latest,
                                     cipher=self.cipher)
        except InputError as exc:
            raise WorkerError(f"{workflow}: {exc}") from exc
        if dry_run:
            return plan, None
        async with self.pool.acquire() as conn, conn.transaction():
            new_id = await create_replay(conn, plan, str(who), cipher=self.cipher,
                                         encrypt=self.settings.encrypt_payloads)
            await audit.append_txn(conn, who, "replay", run_id=run_id, workflow=workflow, seen=plan_as_dict(plan),
                                   decision={"new_run": new_id})
        await self._nudge(new_id)
        return plan, RunId(new_id)

    async def matching_runs(self, *, status: str | None, workflow: str | None, limit: int = 10_000) -> list[RunSummary]:
        return await self.list_runs(status=status, workflow=workflow, limit=limit)


_CALL_TEXT = 500
"""Characters of an LLM turn's text or a tool result kept in `StepView.progress["calls"]`."""


def _clip(value: Any) -> Any:
    """A text cut to `_CALL_TEXT`; a JSON value that would print longer becomes such a text."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= _CALL_TEXT:
        return value
    return text[: _CALL_TEXT - 1] + "…"


def _journal_call(index: int, entry: Any, calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A short copy of agent journal entry `index` for display (None if it is not an llm or tool entry).

    A tool entry does not name its tool: it is call `index - j - 1` of the LLM turn at index `j` before it.
    """
    if not isinstance(entry, dict) or entry.get("type") not in ("llm", "tool"):
        return None
    if entry["type"] == "llm":
        asked = [{"id": c.get("id"), "name": c.get("name"), "arguments": _clip(c.get("arguments"))}
                 for c in entry.get("tool_calls") or [] if isinstance(c, dict)]
        return {"index": index, "type": "llm", "text": _clip(entry.get("text") or ""), "tool_calls": asked,
                "usage": entry.get("usage"), "model": entry.get("model"),
                "finish_reason": entry.get("finish_reason"), "cost_usd": entry.get("cost_usd")}
    turn = next((c for c in reversed(calls) if c["type"] == "llm"), None)
    n = index - turn["index"] - 1 if turn is not None else -1
    asked = turn["tool_calls"][n] if turn is not None and 0 <= n < len(turn["tool_calls"]) else {}
    text = entry.get("text") or ""
    if not text and entry.get("structuredContent") is not None:
        text = json.dumps(entry["structuredContent"], ensure_ascii=False, default=str)
    elif not text and entry.get("content"):
        text = json.dumps(entry["content"], ensure_ascii=False, default=str)
    return {"index": index, "type": "tool", "name": asked.get("name"), "arguments": asked.get("arguments"),
            "text": _clip(text), "isError": bool(entry.get("isError")), "approval": entry.get("approval")}


def _check_traceparent(value: str | None) -> str | None:
    """A valid W3C traceparent (normalised), None for None; anything else is a usage error."""
    if value is None:
        return None
    from worker.telemetry.spans import parse_traceparent

    ctx = parse_traceparent(value)
    if ctx is None:
        raise InvalidRequest(f"traceparent {value!r} is not a valid W3C trace context "
                          "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)")
    return ctx.header()
