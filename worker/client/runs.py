"""RuntimeClient, part runs: list, count, get, cancel, wait for and replay runs (starting them: `starts`).

A run's detail shows unfinished agent steps with their progress so far (tokens, cost and a short copy of
each LLM turn and tool call, read from the step journal), and a queued run its place in its key's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from worker.client.base import ClientBase
from worker.engine.inputs import InputError
from worker.engine.views import step_views
from worker.errors import Conflict, NotFound, WorkerError
from worker.models import EventView, PauseInfo, RunDetail, RunId, RunStatus, RunSummary, StepStatus, StepView
from worker.oversight import audit
from worker.search import filters as search_filters
from worker.search.filters import RunFilter
from worker.store import concurrency
from worker.store import runs as store

_RUN_COLS = """run_id::text, workflow, def_hash, status, created_at, updated_at, finished_at, current_step, history_at,
               waiting_on, parent_run_id::text, error, trigger, wake_at, priority, concurrency_key,
               CASE WHEN paused_by IS NOT NULL THEN
                        jsonb_build_object('by', paused_by, 'at', extract(epoch FROM paused_at)::float8,
                                           'reason', pause_reason, 'scope', 'run', 'now', pause_now)
                    WHEN status NOT IN ('completed', 'failed', 'cancelled') THEN (
                        SELECT jsonb_build_object('by', wp.paused_by, 'at', extract(epoch FROM wp.paused_at)::float8,
                                                  'reason', wp.reason, 'scope', 'workflow', 'now', wp.pause_now)
                        FROM workflow_pauses wp WHERE wp.workflow = runs.workflow) END AS pause,
               CASE WHEN waiting_on = 'human' THEN (
                   SELECT jsonb_build_object('kind', t.kind, 'approvers', t.approvers) FROM human_tasks t
                   WHERE t.run_id = runs.run_id AND t.status = 'pending' ORDER BY t.created_at LIMIT 1) END AS human"""
"""The columns of a RunSummary (a statement over `runs`, unaliased): `pause` is the run's own pause, else its
workflow's while the run is not finished."""


def _pause(value: Any) -> PauseInfo | None:
    if not isinstance(value, dict):
        return None
    return PauseInfo(str(value["by"]), datetime.fromtimestamp(float(value["at"]), tz=UTC), value.get("reason"),
                     str(value.get("scope") or "run"), bool(value.get("now")))


def _waiting_for(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    whom = ", ".join(str(a) for a in value.get("approvers") or []) or "anyone"
    return f"uncertain effect: {whom}" if value.get("kind") == "uncertain" else whom


def _summary(r: asyncpg.Record) -> RunSummary:
    return RunSummary(RunId(r["run_id"]), r["workflow"], r["def_hash"], RunStatus(r["status"]), r["created_at"],
                      r["updated_at"], r["finished_at"], r["current_step"], r["waiting_on"],
                      RunId(r["parent_run_id"]) if r["parent_run_id"] else None, r["error"], r["trigger"],
                      r["wake_at"] if r["status"] == "waiting" else None, r["priority"], r["concurrency_key"],
                      _pause(r["pause"]), _waiting_for(r["human"]))



COUNT_EXACT_UPTO = 10_000
"""`count_runs` counts each status exactly up to this many runs; beyond, the planner's estimate."""

_COUNT_SQL = """
WITH size AS (  -- the table's rows now: the last ANALYZE's density times its pages now (as the planner does)
    SELECT CASE WHEN c.reltuples < 0 THEN NULL
                WHEN c.relpages = 0 THEN c.reltuples
                ELSE c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int) END AS n
    FROM pg_class c WHERE c.oid = 'runs'::regclass
), shares AS (
    SELECT v.status, v.share FROM pg_stats s,
           unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(status, share)
    WHERE s.schemaname = current_schema() AND s.tablename = 'runs' AND s.attname = 'status'
)
SELECT k.status,
       (SELECT count(*) FROM (SELECT 1 FROM runs r WHERE r.status = k.status LIMIT $1) AS x) AS n,
       ((SELECT n FROM size) * (SELECT share FROM shares WHERE shares.status = k.status))::bigint AS estimate
FROM unnest(ARRAY['queued', 'pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'])
     AS k(status)
"""


class RunCounts(dict[str, int]):
    """Runs by status (`count_runs`): a dict, with `estimated` naming the statuses whose count is an estimate
    (shown as `~N`): those with more than COUNT_EXACT_UPTO runs."""

    estimated: frozenset[str]

    def __init__(self, counts: dict[str, int] | None = None, *, estimated: frozenset[str] = frozenset()) -> None:
        super().__init__(counts or {})
        self.estimated = estimated


RUN_ORDERS: dict[str, str] = {
    "newest": "created_at DESC",
    "oldest": "created_at ASC",
    "longest": "coalesce(finished_at, now()) - created_at DESC, created_at DESC",
    "workflow": "workflow ASC, created_at DESC",
}
"""The orders `list_runs` knows, by name (the SQL is fixed here: never built from input)."""


class RunsApi(ClientBase):
    """Reading, cancelling, waiting for and replaying runs."""

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
                        before: datetime | None = None, search: str | None = None,
                        order: str = "newest", filters: RunFilter | None = None,
                        primary: bool = False) -> list[RunSummary]:
        """Runs in `order` (RUN_ORDERS: newest first by default). `search`: a case-insensitive POSIX regex over
        run id, workflow, current step, error, what it waits on. `status` is a RunStatus, or `retrying`: runs
        backing off between attempts of a step (status waiting, `waiting_on` `retry N/M`). `filters`
        (worker/search) combines more: step, error text, started within, waiting on what or whom; `status`,
        `workflow` and `search` given here narrow it further.

        Bounded at scale: `search`, `step` and `error` (no index can serve them) and the `longest` order look at
        the newest `search_filters.SCAN_LIMIT` runs that match the rest (the oldest ones in the `oldest` order),
        and a search that is a run id prefix at the runs whose id starts with it as well; everything else is
        served by an index (bench/scale.py).

        Read from the read replica when one is configured (`primary=True`: from the primary, for a decision)."""
        db = self.pool if primary else self.reader
        if order not in RUN_ORDERS:
            raise WorkerError(f"unknown run order {order!r}; one of {', '.join(RUN_ORDERS)}")
        f = (filters or RunFilter()).merged(RunFilter(workflow=workflow, status=status, search=search))
        c = search_filters.conditions(f, before, first=2)
        bounded = bool(c.scanned) or order == "longest"
        if bounded:
            by = "created_at ASC" if order == "oldest" else "created_at DESC"
            sql = (f"SELECT {_RUN_COLS} FROM (SELECT * FROM runs WHERE {c.sql(c.indexed)} ORDER BY {by} "
                   f"LIMIT {search_filters.SCAN_LIMIT}) runs WHERE {c.sql(c.scanned)} "
                   f"ORDER BY {RUN_ORDERS[order]} LIMIT $1")
        else:
            sql = f"SELECT {_RUN_COLS} FROM runs WHERE {c.sql(c.indexed)} ORDER BY {RUN_ORDERS[order]} LIMIT $1"
        rows = await db.fetch(sql, limit, *c.args)
        ids = search_filters.id_range(f.search) if bounded else None
        if ids is not None:  # a run id prefix finds its run however old: a range of the primary key
            n = len(c.args) + 1
            older = await db.fetch(
                f"SELECT run_id::text FROM runs WHERE run_id BETWEEN ${n + 1} AND ${n + 2} "
                f"AND {c.sql(c.indexed + c.scanned)} LIMIT $1", limit, *c.args, *ids)
            listed = [r["run_id"] for r in rows]
            extra = [r["run_id"] for r in older if r["run_id"] not in set(listed)]
            if extra:
                rows = await db.fetch(
                    f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ANY($2::text[]::uuid[]) "
                    f"ORDER BY {RUN_ORDERS[order]} LIMIT $1", limit, listed + extra)
        return [_summary(r) for r in rows if self.authorizer.allowed(self.identity, "view", r["workflow"])]

    async def count_runs(self) -> RunCounts:
        """Runs by status, for the status tabs, without reading millions of rows: each status is counted exactly
        (an index-only scan of runs_status_created_idx) up to COUNT_EXACT_UPTO; a status with more (completed,
        failed... in a big database) gets the planner's estimate instead (its share of the table in the
        statistics ANALYZE keeps, times the table's rows scaled to its current size), named in `estimated`."""
        rows = await self.reader.fetch(_COUNT_SQL, COUNT_EXACT_UPTO)
        counts: dict[str, int] = {}
        estimated: set[str] = set()
        for r in rows:
            n = r["n"]
            if n >= COUNT_EXACT_UPTO:
                n = max(COUNT_EXACT_UPTO, int(r["estimate"] or 0))
                estimated.add(r["status"])
            if n:
                counts[r["status"]] = n
        return RunCounts(counts, estimated=frozenset(estimated))

    async def count_retrying(self) -> int:
        """Runs backing off between attempts of a step (a part of the `waiting` ones)."""
        return int(await self.reader.fetchval(
            "SELECT count(*) FROM runs WHERE status = 'waiting' AND waiting_on LIKE 'retry%'"))

    async def get_run(self, run_id: str) -> RunDetail:
        """A run with its steps and events: from the read replica when one is configured, or from the primary
        when the replica does not have the run yet (one just started)."""
        run_id = await self.resolve_run_id(run_id)
        db, row = await self.read_run_from(f"SELECT {_RUN_COLS}, inputs, output FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        events = await store.load_events(db, run_id, row["history_at"])
        spec_row = await db.fetchrow("SELECT spec FROM definitions WHERE def_hash = $1", row["def_hash"])
        steps_spec = (spec_row["spec"] if spec_row else {}).get("steps", [])
        kinds = {s["id"]: s["uses"] for s in steps_spec}
        order = [s["id"] for s in steps_spec]
        children = await db.fetch(
            "SELECT run_id::text FROM runs WHERE parent_run_id = $1 ORDER BY created_at", run_id)
        payload = {"inputs": row["inputs"], "output": row["output"]}
        await self._open_for_display([payload, *(e.data for e in events)])
        steps = await self._with_agent_progress(run_id, step_views(run_id, events, kinds, order), db)
        return RunDetail(
            summary=_summary(row), inputs=payload["inputs"], output=payload["output"],
            steps=tuple(steps),
            events=tuple(EventView(e.seq, datetime.fromtimestamp(e.ts, tz=UTC), e.type, e.step_id, e.item,
                                   e.attempt, e.data) for e in events),
            children=tuple(RunId(r["run_id"]) for r in children),
            queue=await concurrency.queue_position(db, run_id) if row["status"] == "queued" else None,
        )

    async def events_after(self, run_id: str, after_seq: int = 0, *,
                           limit: int = 500) -> tuple[RunSummary, list[EventView]]:
        """The run (for its status) and its committed events with `seq > after_seq`, in order: what a client
        that has seen up to `after_seq` has not (an SSE stream resumes from here without gaps or repeats).
        From the read replica when one is configured (it applies a run's commits in order: later, never with a
        gap), else, or while the replica does not have the run yet, from the primary."""
        run_id = await self.resolve_run_id(run_id)
        db, row = await self.read_run_from(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        at = row["history_at"]
        while True:
            rows = await db.fetch(
                f"""SELECT seq, ts, type, step_id, item, attempt, data FROM events
                    WHERE {store.RUN_EVENTS} AND seq > $3 ORDER BY seq LIMIT $4""", run_id, at, after_seq, limit)
            # nothing new: or retention moved the run to today's partition since its row was read
            if rows or (moved := await store.history_of(db, run_id)) in (None, at):
                break
            at = moved
        events = [store.row_to_event(r) for r in rows]
        await self._open_for_display([e.data for e in events])
        return _summary(row), [EventView(e.seq, datetime.fromtimestamp(e.ts, tz=UTC), e.type, e.step_id, e.item,
                                         e.attempt, e.data) for e in events]

    async def _with_agent_progress(self, run_id: str, steps: list[StepView],
                                   db: asyncpg.Pool | None = None) -> list[StepView]:
        """Unfinished agent steps with the tokens and cost of the LLM turns their journal holds so far,
        and a short copy of each LLM turn and tool call in it (`calls`, in order)."""
        unfinished = {(v.step_id, -1 if v.item is None else v.item) for v in steps
                      if v.kind == "agent" and v.output is None and v.status != StepStatus.PENDING}
        if not unfinished:
            return steps
        rows = await (db or self.pool).fetch(
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
        """Cancel a run (audited): a queued run ends at once; a worker stops an admitted one."""
        run_id = await self.resolve_run_id(run_id)
        who = self._actor(by)
        head = await self.pool.fetchrow("SELECT workflow, status, concurrency_key FROM runs WHERE run_id = $1", run_id)
        if head is None:
            raise NotFound(f"no run {run_id!r}")
        workflow = head["workflow"]
        await self._authorize(who, "cancel", workflow, run_id=run_id)
        why = f"cancelled by {who}" + (f": {reason}" if reason else "")
        if head["status"] == "queued":  # no worker holds it: it ends here, under its key's lock
            ended = None
            async with self.pool.acquire() as conn, conn.transaction():
                await concurrency.lock_txn(conn, [(workflow, head["concurrency_key"])])
                if await concurrency.cancel_queued_txn(conn, run_id, why):
                    await audit.append_txn(conn, who, "cancel", run_id=run_id, workflow=workflow, reason=reason,
                                           seen={"status": "queued", "concurrency_key": head["concurrency_key"]})
                    ended = _summary(await conn.fetchrow(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = $1", run_id))
            if ended is not None:
                with contextlib.suppress(RedisError, OSError):  # wake its waiters (else they see it within 0.5 s)
                    await self.redis.publish(self.keys.done(run_id), "1")
                return ended
            # admitted meanwhile: cancelled like any admitted run
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE runs SET cancel_requested = true, cancel_reason = $2,
                           signal_version = signal_version + 1, updated_at = now()
                    WHERE run_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
                    RETURNING {_RUN_COLS}""",
                run_id, why)
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
        """Wait until the run is finished; TimeoutError after `timeout` seconds (None: forever).

        The worker that commits the run's end pushes it (worker/client/completion.py): the wait ends at once.
        The row is read again every `poll` seconds anyway (at most 0.5 s apart, at least 2 ms), so a lost
        push, or a run ended outside a worker, costs at most that."""
        run_id = await self.resolve_run_id(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = min(max(poll, 0.002), 0.5)
        done = await self.completions.watch(run_id)
        try:
            while True:
                row = await self.pool.fetchrow(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = $1", run_id)
                if row is None:
                    raise NotFound(f"no run {run_id!r}")
                summary = _summary(row)
                if summary.status.terminal:
                    return summary
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise TimeoutError(f"run {run_id} still {summary.status.value} after {timeout}s")
                pause = recheck if self.completions.broken else max(recheck, 0.5)
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), pause)
        finally:
            await self.completions.unwatch(run_id, done)

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
            new_id, admitted = await create_replay(conn, plan, str(who), cipher=self.cipher,
                                                   encrypt=self.settings.encrypt_payloads)
            await audit.append_txn(conn, who, "replay", run_id=run_id, workflow=workflow, seen=plan_as_dict(plan),
                                   decision={"new_run": new_id})
        await self._nudge_admitted([admitted])
        return plan, RunId(new_id)

    async def matching_runs(self, *, status: str | None = None, workflow: str | None = None, limit: int = 10_000,
                            filters: RunFilter | None = None) -> list[RunSummary]:
        """The runs a bulk action acts on: read from the primary (a decision), never from a replica."""
        return await self.list_runs(status=status, workflow=workflow, limit=limit, filters=filters, primary=True)


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
