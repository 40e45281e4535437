"""The span store and step log lines (migration 0002; partitioned by day since 0018): batched writes and reads by
run. Retention drops whole days (worker/history/retention.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from worker.runlog import Event
from worker.store.pool import dumps
from worker.store.runs import load_events, row_to_event, ts_to_dt


@dataclass(frozen=True, slots=True)
class RunTraceInfo:
    run_id: str
    workflow: str
    def_hash: str
    traceparent: str | None


async def insert_spans(pool: asyncpg.Pool, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """(run_id, span row) pairs in one statement; a span already stored (same id) is kept."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for run_id, row in rows:
        by_run.setdefault(run_id, []).append(row)
    await insert_span_json(pool, [(run_id, dumps(run_rows)) for run_id, run_rows in by_run.items()])


async def insert_span_json(pool: asyncpg.Pool, runs: Sequence[tuple[str, str]]) -> None:
    """(run_id, JSON array of that run's span rows, as `SpanRecord.to_row` shapes them) in one statement;
    Postgres takes the rows apart (jsonb_to_recordset): the worker serializes each span once, for this and
    for the live stream alike. A span already stored (same id) is kept."""
    if not runs:
        return
    await pool.execute(
        """INSERT INTO spans (run_id, span_id, trace_id, parent_id, name, kind, start_ts, end_ts, status,
                              status_message, attributes, events)
           SELECT r.run_id, x.span_id, x.trace_id, x.parent_id, x.name, x.kind, to_timestamp(x.start),
                  to_timestamp(x."end"), x.status, x.status_message, coalesce(x.attributes, '{}'),
                  coalesce(x.events, '[]')
           FROM unnest($1::uuid[], $2::text[]) AS r(run_id, rows),
                jsonb_to_recordset(r.rows::jsonb) AS x(span_id text, trace_id text, parent_id text, name text,
                                                       kind text, start float8, "end" float8, status text,
                                                       status_message text, attributes jsonb, events jsonb)
           ON CONFLICT DO NOTHING""",
        [run_id for run_id, _ in runs], [json for _, json in runs])


async def insert_step_logs(pool: asyncpg.Pool, rows: Sequence[tuple[Any, ...]]) -> None:
    """(run_id, step_id, item, attempt, ts, level, logger, message, trace_id, span_id) tuples."""
    if not rows:
        return
    cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    cols[4] = [ts_to_dt(t) for t in cols[4]]
    await pool.execute(
        """INSERT INTO step_logs (run_id, step_id, item, attempt, ts, level, logger, message, trace_id, span_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::timestamptz[], $6::text[],
                                $7::text[], $8::text[], $9::text[], $10::text[])""",
        *cols)


async def load_spans(pool: asyncpg.Pool | asyncpg.Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's stored spans, by start time (the console's waterfall)."""
    rows = await pool.fetch(
        """SELECT span_id, trace_id, parent_id, name, kind, start_ts, end_ts, status, status_message, attributes,
                  events FROM spans WHERE run_id = $1 ORDER BY start_ts, end_ts DESC""", run_id)
    return [{"span_id": r["span_id"], "trace_id": r["trace_id"], "parent_id": r["parent_id"], "name": r["name"],
             "kind": r["kind"], "start": r["start_ts"].timestamp(), "end": r["end_ts"].timestamp(),
             "status": r["status"], "status_message": r["status_message"], "attributes": r["attributes"],
             "events": r["events"]} for r in rows]


@dataclass(frozen=True, slots=True)
class LogLine:
    id: int
    run_id: str
    step_id: str
    item: int | None
    attempt: int | None
    ts: datetime
    level: str
    logger: str | None
    message: str
    trace_id: str | None
    span_id: str | None


async def load_step_logs(pool: asyncpg.Pool | asyncpg.Connection, run_id: str, *, step_id: str | None = None,
                         after_id: int = 0, limit: int = 5000) -> list[LogLine]:
    rows = await pool.fetch(
        """SELECT id, run_id::text, step_id, item, attempt, ts, level, logger, message, trace_id, span_id
           FROM step_logs WHERE run_id = $1 AND ($2::text IS NULL OR step_id = $2) AND id > $3
           ORDER BY id LIMIT $4""", run_id, step_id, after_id, limit)
    return [LogLine(r["id"], r["run_id"], r["step_id"], r["item"], r["attempt"], r["ts"], r["level"], r["logger"],
                    r["message"], r["trace_id"], r["span_id"]) for r in rows]


async def load_trace_info(pool: asyncpg.Pool, run_ids: Sequence[str]) -> dict[str, RunTraceInfo]:
    rows = await pool.fetch(
        "SELECT run_id::text, workflow, def_hash, traceparent FROM runs WHERE run_id = ANY($1::uuid[])",
        list(run_ids))
    return {r["run_id"]: RunTraceInfo(r["run_id"], r["workflow"], r["def_hash"], r["traceparent"]) for r in rows}


async def load_step_kinds(pool: asyncpg.Pool | asyncpg.Connection,
                          def_hashes: Sequence[str]) -> dict[str, dict[str, str]]:
    """step id -> `uses` for each definition version."""
    rows = await pool.fetch(
        """SELECT def_hash, coalesce((SELECT jsonb_object_agg(s->>'id', s->>'uses')
                                      FROM jsonb_array_elements(spec->'steps') s), '{}'::jsonb) AS kinds
           FROM definitions WHERE def_hash = ANY($1::text[])""", list(def_hashes))
    return {r["def_hash"]: dict(r["kinds"] or {}) for r in rows}


async def load_events_before(pool: asyncpg.Pool, bounds: dict[str, int]) -> dict[str, list[Event]]:
    """Each run's events with seq below its bound; inputs and outputs left out (only shapes matter)."""
    if not bounds:
        return {}
    # a statement per history day (usually one): with the day a value, Postgres reads that partition only
    by_day: dict[datetime, list[str]] = {}
    for r in await pool.fetch("SELECT run_id::text, history_at FROM runs WHERE run_id = ANY($1::uuid[])",
                              list(bounds)):
        by_day.setdefault(r["history_at"], []).append(r["run_id"])
    out: dict[str, list[Event]] = {}
    for day, ids in by_day.items():
        rows = await pool.fetch(
            """SELECT e.run_id::text AS run_id, e.seq, e.ts, e.type, e.step_id, e.item, e.attempt,
                      e.data - 'inputs' - 'output' - 'context' AS data
               FROM events e JOIN unnest($1::uuid[], $2::int[]) AS b(run_id, bound)
                 ON e.run_id = b.run_id AND e.seq < b.bound
               WHERE e.history_at = $3
               ORDER BY e.run_id, e.seq""",
            ids, [bounds[i] for i in ids], day)
        for r in rows:
            out.setdefault(r["run_id"], []).append(row_to_event(r))
    return out


async def load_run_for_export(pool: asyncpg.Pool | asyncpg.Connection,
                              run_id: str) -> tuple[RunTraceInfo, list[Event]] | None:
    row = await pool.fetchrow(
        "SELECT run_id::text, workflow, def_hash, traceparent FROM runs WHERE run_id = $1", run_id)
    if row is None:
        return None
    events = await load_events(pool, run_id)
    return (RunTraceInfo(row["run_id"], row["workflow"], row["def_hash"], row["traceparent"]),
            events)
