"""RuntimeClient: the API that the CLI and the console use to read state and send commands.

Reads come from Postgres, live events from the Redis events stream. Commands (start, approve,
reject, resolve, cancel) write to Postgres in one transaction, then nudge the workers via Redis;
if Redis is down the reconciler delivers them anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from worker.bus.codec import decode_event
from worker.bus.streams import WORK_MAXLEN, Keys
from worker.config import Settings
from worker.definitions.model import Definition
from worker.definitions.versions import diff_pair, source_diff
from worker.engine import events as ev
from worker.engine.inputs import InputError, resolve_inputs
from worker.engine.views import step_views
from worker.errors import Conflict, NotFound, PermissionDenied, WorkerError
from worker.identity import Identity
from worker.identity import current as current_person
from worker.models import (
    EventView,
    HumanTask,
    RunDetail,
    RunId,
    RunStatus,
    RunSummary,
    SpanView,
    StepLogLine,
    StepStatus,
    StepView,
    TaskId,
    TaskStatus,
    WorkerInfo,
    WorkflowEvent,
    WorkflowInfo,
    WorkflowVersion,
)
from worker.oversight import audit
from worker.oversight.policy import Action, Authorizer
from worker.secrets.transit import CipherError, build_cipher, is_sealed, open_fields, seal_fields
from worker.store import runs as store
from worker.store.definitions import active_version
from worker.store.pool import create_pool

logger = logging.getLogger(__name__)

_RUN_COLS = """run_id::text, workflow, def_hash, status, created_at, updated_at, finished_at, current_step,
               waiting_on, parent_run_id::text, error"""


def _summary(r: asyncpg.Record) -> RunSummary:
    return RunSummary(RunId(r["run_id"]), r["workflow"], r["def_hash"], RunStatus(r["status"]), r["created_at"],
                      r["updated_at"], r["finished_at"], r["current_step"], r["waiting_on"],
                      RunId(r["parent_run_id"]) if r["parent_run_id"] else None, r["error"])


def _task(r: asyncpg.Record) -> HumanTask:
    return HumanTask(TaskId(str(r["task_id"])), RunId(str(r["run_id"])), r["workflow"], r["step_id"], r["kind"],
                     TaskStatus(r["status"]), r["prompt"], r["context"], r["created_at"], r["deadline"],
                     r["on_timeout"], r["decided_by"], r["decided_at"], r["reason"], r["requested_by"],
                     tuple(r["approvers"] or ()), r["min_approvals"],
                     tuple(str(a.get("by")) for a in (r["approvals"] or []) if isinstance(a, dict)), r["escalated"])


RUN_ORDERS: dict[str, str] = {
    "newest": "created_at DESC",
    "oldest": "created_at ASC",
    "longest": "coalesce(finished_at, now()) - created_at DESC, created_at DESC",
    "workflow": "workflow ASC, created_at DESC",
}
"""The orders `list_runs` knows, by name (the SQL is fixed here: never built from input)."""


class RuntimeClient:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, *,
                 identity: Identity | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.identity = identity or current_person()
        self.authorizer = Authorizer.from_path(settings.policy_file)
        self.cipher = build_cipher(settings)  # opens encrypted payloads for display (and seals new inputs)
        self.keys = Keys(settings.redis_prefix)
        self._definitions: dict[str, Definition] = {}

    @classmethod
    async def connect(cls, settings: Settings, *, identity: Identity | None = None) -> RuntimeClient:
        authorizer = Authorizer.from_path(settings.policy_file)  # a broken policy file fails before connecting
        pool = await create_pool(settings.database_url, min_size=1, max_size=4)
        redis = aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)
        client = cls(settings, pool, redis, identity=identity)
        client.authorizer = authorizer
        return client

    # -- authorization: every action goes through here, for the CLI and the console alike ------
    def _actor(self, by: str | None) -> Identity:
        """The acting identity; `by` (for programmatic callers and tests) names a user without groups."""
        return self.identity if by is None else Identity(user=by)

    async def _authorize(self, who: Identity, action: Action, workflow: str, *, run_id: str | None = None,
                         task_id: str | None = None, audit_denial: bool = True) -> None:
        if self.authorizer.allowed(who, action, workflow):
            return
        if audit_denial:
            await audit.append(self.pool, who, action, outcome="denied", run_id=run_id, task_id=task_id,
                               workflow=workflow, reason="not allowed by the policy file")
        self.authorizer.check(who, action, workflow)  # logs and raises PermissionDenied

    async def close(self) -> None:
        await self.pool.close()
        await self.redis.aclose()

    async def __aenter__(self) -> RuntimeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- nudges (best effort: Postgres already has the truth) --------------------------------
    async def _nudge(self, run_id: str, *, signal: bool = False) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.keys.work, {"run": run_id}, maxlen=WORK_MAXLEN, approximate=True)
                if signal:
                    pipe.publish(self.keys.signals, run_id)
                await pipe.execute()
        except (RedisError, OSError):
            pass  # the reconciler re-derives the work from Postgres

    # -- runs ------------------------------------------------------------------------------
    async def resolve_run_id(self, run_id: str) -> str:
        """Full run id from a full id or a unique prefix (as shown in listings)."""
        try:
            return str(uuid.UUID(run_id))
        except ValueError:
            pass
        if len(run_id) < 4 or any(c not in "0123456789abcdef-" for c in run_id.lower()):
            raise NotFound(f"no run {run_id!r}")
        rows = await self.pool.fetch(
            "SELECT run_id::text FROM runs WHERE run_id::text LIKE $1 LIMIT 2", run_id.lower() + "%")
        if not rows:
            raise NotFound(f"no run {run_id!r}")
        if len(rows) > 1:
            raise NotFound(f"run id prefix {run_id!r} is ambiguous; give more characters")
        return str(rows[0]["run_id"])

    async def register_local(self, name: str) -> bool:
        """Load workflow `name` from the local workflows directory into Postgres (no worker needed)."""
        from worker.boundary import load_checks
        from worker.engine.definitions_sync import DefinitionsSync  # local: only for this fallback

        root = self.settings.workflows_dir.resolve()
        if not root.is_dir():
            return False
        sync = DefinitionsSync(self.pool, root, None, checks=load_checks(self.settings))
        changes = await sync.initial_scan()
        return any(c.name == name and c.kind != "invalid" for c in changes)

    def _encrypts(self, defn: Definition) -> bool:
        return self.settings.encrypt_payloads or defn.spec.encrypt_payloads

    async def _open_for_display(self, holders: list[dict[str, Any]]) -> None:
        """Decrypt sealed payloads for display; without Vault access, say so instead of showing ciphertext."""
        try:
            await open_fields(self.cipher, holders)
        except CipherError as exc:
            for h in holders:
                for field in ("inputs", "output"):
                    if is_sealed(h.get(field)):
                        h[field] = f"<encrypted with Vault transit: {exc}>"

    async def _active_definition(self, workflow: str) -> tuple[str, Definition]:
        """The version new runs of `workflow` use (registering the local file if no worker has yet)."""
        found = await active_version(self.pool, workflow)
        if found is None and await self.register_local(workflow):
            found = await active_version(self.pool, workflow)
        if found is None:
            raise NotFound(f"no active workflow named {workflow!r} (see `agentrt workflows`)")
        def_hash, spec = found
        defn = self._definitions.get(def_hash)
        if defn is None:
            defn = self._definitions[def_hash] = Definition.from_json(spec)
        return def_hash, defn

    async def start_run(self, workflow: str, inputs: dict[str, Any] | None = None, *,
                        requested_by: str | None = None, traceparent: str | None = None) -> RunId:
        """Start a run; `traceparent` (W3C) makes its trace part of the caller's."""
        traceparent = _check_traceparent(traceparent)
        def_hash, defn = await self._active_definition(workflow)
        try:
            resolved = resolve_inputs(defn.spec, inputs or {})
        except InputError as exc:
            raise WorkerError(f"{workflow}: {exc}") from exc
        run_id = str(uuid.uuid4())
        created = ev.Event(ev.RUN_CREATED, time.time(),
                           data={"workflow": workflow, "def_hash": def_hash, "inputs": resolved,
                                 "requested_by": requested_by or str(self.identity)})
        if self._encrypts(defn):
            await seal_fields(self.cipher, [created.data])
            resolved = created.data["inputs"]
        async with self.pool.acquire() as conn, conn.transaction():
            await store.insert_run_txn(conn, run_id=run_id, workflow=workflow, def_hash=def_hash, inputs=resolved,
                                       created=created, requested_by=requested_by or str(self.identity),
                                       traceparent=traceparent)
        await self._nudge(run_id)
        return RunId(run_id)

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
        created = [{"workflow": workflow, "def_hash": def_hash, "inputs": r, "requested_by": who} for r in resolved]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO runs (run_id, workflow, def_hash, inputs, requested_by, enqueued_at, next_seq,
                                     traceparent)
                   SELECT id, $2, $3, inp, $4, now(), 2, $6 FROM unnest($1::uuid[], $5::jsonb[]) AS t(id, inp)""",
                ids, workflow, def_hash, who, resolved, traceparent)
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

    # -- human tasks -----------------------------------------------------------------------
    _TASK_SQL = """SELECT t.task_id, t.run_id, r.workflow, t.step_id, t.kind, t.status, t.prompt, t.context,
                          t.created_at, t.deadline, t.on_timeout, t.decided_by, t.decided_at, t.reason,
                          coalesce(t.requested_by, r.requested_by) AS requested_by, t.approvers, t.min_approvals,
                          t.approvals, t.escalated
                   FROM human_tasks t JOIN runs r ON r.run_id = t.run_id"""

    async def list_tasks(self, *, status: str | None = "pending", run_id: str | None = None,
                         limit: int = 200) -> list[HumanTask]:
        rows = await self.pool.fetch(
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

    # -- spans, logs, health (the console's waterfall, inspector and connection banner) ----------
    async def spans(self, run_id: str) -> list[SpanView]:
        """The run's finished spans from the span store, by start time."""
        from worker.store.spans import load_spans

        run_id = await self.resolve_run_id(run_id)
        workflow = await self.pool.fetchval("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if workflow is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", workflow, run_id=run_id, audit_denial=False)
        stored = await load_spans(self.pool, run_id)
        return [SpanView(s["span_id"], s["parent_id"], s["name"], s["kind"],
                         datetime.fromtimestamp(s["start"], tz=UTC), datetime.fromtimestamp(s["end"], tz=UTC),
                         s["status"], s["status_message"], s["attributes"]) for s in stored]

    async def step_logs(self, run_id: str, *, step_id: str | None = None, after_id: int = 0,
                        limit: int = 2000) -> list[StepLogLine]:
        """Log lines a run's steps wrote (e.g. `python` steps using logging), oldest first."""
        from worker.store.spans import load_step_logs

        run_id = await self.resolve_run_id(run_id)
        workflow = await self.pool.fetchval("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if workflow is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", workflow, run_id=run_id, audit_denial=False)
        lines = await load_step_logs(self.pool, run_id, step_id=step_id, after_id=after_id, limit=limit)
        return [StepLogLine(x.id, x.step_id, x.item, x.attempt, x.ts, x.level, x.message) for x in lines]

    async def health(self) -> dict[str, str | None]:
        """{"postgres": None or the error, "redis": None or the error}: for connection banners."""
        result: dict[str, str | None] = {"postgres": None, "redis": None}
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 3)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            result["postgres"] = f"{type(exc).__name__}: {exc}"
        try:
            await asyncio.wait_for(self.redis.ping(), 3)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            result["redis"] = f"{type(exc).__name__}: {exc}"
        return result

    # -- audit -------------------------------------------------------------------------------
    async def audit_records(self, *, run_id: str | None = None, limit: int = 1000) -> list[audit.AuditRecord]:
        if run_id is not None:
            run_id = await self.resolve_run_id(run_id)
        return await audit.records(self.pool, run_id=run_id, limit=limit)

    async def verify_audit(self) -> audit.Verification:
        return await audit.verify(self.pool)

    # -- workflows and workers ---------------------------------------------------------------
    async def list_workflows(self) -> list[WorkflowInfo]:
        rows = await self.pool.fetch(
            """SELECT f.path, f.name, f.def_hash, f.status, f.error, f.error_line, f.error_column, f.updated_at,
                      f.excerpt, (SELECT count(*) FROM definitions d WHERE d.name = f.name) AS versions
               FROM workflow_files f ORDER BY f.name NULLS LAST, f.path""")
        return [WorkflowInfo(r["path"], r["name"], r["def_hash"], r["status"], r["error"], r["error_line"],
                             r["error_column"], r["updated_at"], r["versions"], r["excerpt"]) for r in rows]

    # The version new runs use: the same rule as worker.store.definitions.active_version.
    _ACTIVE_HASH_SQL = """(SELECT f.def_hash FROM workflow_files f WHERE f.name = $1 AND f.status <> 'deleted'
                          ORDER BY f.updated_at DESC LIMIT 1)"""

    async def workflow_versions(self, name: str, *, limit: int = 50) -> list[WorkflowVersion]:
        """The stored versions of workflow `name`, newest first: the active one marked, and how many runs each
        pinned (one pass over the workflow's runs by index, grouped by version)."""
        await self._authorize(self.identity, "view", name, audit_denial=False)
        rows = await self.pool.fetch(
            f"""WITH used AS (SELECT r.def_hash, count(*) AS n FROM runs r WHERE r.workflow = $1 GROUP BY r.def_hash)
                SELECT d.def_hash, d.name, d.created_at, d.source_path, coalesce(u.n, 0) AS runs,
                       coalesce(d.def_hash = {self._ACTIVE_HASH_SQL}, false) AS active
                FROM definitions d LEFT JOIN used u ON u.def_hash = d.def_hash
                WHERE d.name = $1 ORDER BY d.created_at DESC, d.def_hash LIMIT $2""", name, limit)
        if not rows:
            raise NotFound(f"no workflow named {name!r} (see `agentrt workflows`)")
        return [WorkflowVersion(r["def_hash"], r["name"], r["created_at"], r["source_path"], r["active"], r["runs"])
                for r in rows]

    async def workflow_diff(self, name: str, old_hash: str | None = None, new_hash: str | None = None, *,
                            context: int = 3) -> str:
        """A unified diff of the YAML sources of two versions of `name` ("" when identical).

        Hashes may be unique prefixes. By default: the version before the active one, against the active one.
        """
        await self._authorize(self.identity, "view", name, audit_denial=False)
        rows = await self.pool.fetch(
            f"""SELECT d.def_hash, d.def_hash = {self._ACTIVE_HASH_SQL} AS active FROM definitions d
                WHERE d.name = $1 ORDER BY d.created_at DESC, d.def_hash""", name)
        hashes = [r["def_hash"] for r in rows]
        active = next((r["def_hash"] for r in rows if r["active"]), None)
        old, new = diff_pair(name, hashes, active, old_hash, new_hash)
        sources = {r["def_hash"]: r["source"] for r in await self.pool.fetch(
            "SELECT def_hash, source FROM definitions WHERE def_hash = ANY($1::text[])", [old, new])}
        return source_diff(sources[old], sources[new], f"{name}@{old[:12]}", f"{name}@{new[:12]}", context=context)

    async def workflow_events(self, limit: int = 200) -> list[WorkflowEvent]:
        """The hot-reload history, newest first: files loaded, found invalid (with the error) or deleted."""
        rows = await self.pool.fetch(
            """SELECT id, at, kind, path, name, def_hash, error FROM workflow_events ORDER BY id DESC LIMIT $1""",
            limit)
        return [WorkflowEvent(r["id"], r["at"], r["kind"], r["path"], r["name"], r["def_hash"], r["error"])
                for r in rows]

    async def list_workers(self) -> list[WorkerInfo]:
        rows = await self.pool.fetch(
            """SELECT w.worker_id, w.hostname, w.pid, w.started_at, w.heartbeat_at, w.concurrency, w.stopped_at,
                      w.heartbeat_at + make_interval(secs => w.lease_ttl) > now() AND w.stopped_at IS NULL AS alive,
                      coalesce((SELECT array_agg(r.run_id::text) FROM runs r WHERE r.lease_owner = w.worker_id
                                AND r.lease_expires > now()), '{}') AS held
               FROM workers w ORDER BY w.heartbeat_at DESC LIMIT 200""")
        return [WorkerInfo(r["worker_id"], r["hostname"], r["pid"], r["started_at"], r["heartbeat_at"], r["alive"],
                           tuple(RunId(x) for x in r["held"]), r["concurrency"]) for r in rows]

    # -- live events -------------------------------------------------------------------------
    async def watch_events(self, last_id: str = "$", block_ms: int = 1000) -> AsyncIterator[Any]:
        """Live events after `last_id`, forever; yields nothing (but keeps trying) while Redis is down."""
        while True:
            try:
                reply = await self.redis.xread({self.keys.events: last_id}, count=500, block=block_ms)
            except (RedisError, OSError):
                await asyncio.sleep(1.0)
                continue
            streams: list[Any] = list(reply or [])  # redis-py types replies loosely
            for _stream, entries in streams:
                for entry_id, fields in entries:
                    event = decode_event(entry_id, fields)
                    last_id = event.stream_id
                    yield event


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
        raise WorkerError(f"traceparent {value!r} is not a valid W3C trace context "
                          "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)")
    return ctx.header()


def load_workflow_file(path: Path, settings: Settings | None = None) -> Definition:
    """Validate one file (used by `agentrt validate`): raises DefinitionError.

    With `settings`, the deployment's trust checks run too (what the operator allows the file to reach).
    """
    from worker.boundary import load_checks
    from worker.definitions.loader import load_file

    return load_file(path, checks=load_checks(settings) if settings is not None else ())
