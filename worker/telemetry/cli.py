"""`agentrt logs`, `agentrt export` and `agentrt trace`: step log lines and a run's trace, from Postgres."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from worker.config import Settings
from worker.errors import NotFound
from worker.telemetry.spans import SpanRecord

Handler = Callable[[argparse.Namespace, Settings], int]


def register(subparsers: Any) -> dict[str, Handler]:
    from worker.cli.support import with_client

    lg = subparsers.add_parser("logs", help="print the log lines a run's steps wrote (captured per step)")
    lg.add_argument("run_id", help="run id or a unique prefix of it")
    lg.add_argument("--step", default=None, metavar="ID", help="only this step")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the run ends")
    lg.add_argument("--json", action="store_true", help="one JSON object per line")

    ex = subparsers.add_parser("export", help="write a run's trace (OTLP JSON) or its event log")
    ex.add_argument("run_id", help="run id or a unique prefix of it")
    ex.add_argument("--format", choices=["otlp-json", "events"], default="otlp-json")
    ex.add_argument("--output", "-o", type=Path, default=None, help="file to write (default: stdout)")

    tr = subparsers.add_parser("trace", help="print a run's spans as an indented waterfall")
    tr.add_argument("run_id", help="run id or a unique prefix of it")
    tr.add_argument("--json", action="store_true")
    return {"logs": with_client(cmd_logs), "export": with_client(cmd_export), "trace": with_client(cmd_trace)}


# -- logs ------------------------------------------------------------------------------------
def _line_text(line: Any) -> str:
    where = line.step_id + ("" if line.item is None else f"[{line.item}]")
    attempt = "" if line.attempt is None else f"#{line.attempt}"
    return f"{line.ts:%H:%M:%S.%f}"[:-3] + f" {where}{attempt} {line.level} {line.logger or ''}: {line.message}"


def _line_json(line: Any) -> str:
    return orjson.dumps({"ts": line.ts.isoformat(), "run_id": line.run_id, "step_id": line.step_id,
                         "item": line.item, "attempt": line.attempt, "level": line.level, "logger": line.logger,
                         "message": line.message, "trace_id": line.trace_id, "span_id": line.span_id}).decode()


async def cmd_logs(client: Any, args: argparse.Namespace) -> int:
    from worker.store.spans import load_step_logs

    run_id = await client.resolve_run_id(args.run_id)
    last = 0
    fmt = _line_json if args.json else _line_text
    finished_polls = 0
    while True:
        lines = await load_step_logs(client.pool, run_id, step_id=args.step, after_id=last)
        for line in lines:
            sys.stdout.write(fmt(line) + "\n")
            last = line.id
        sys.stdout.flush()
        if not args.follow:
            if last == 0:
                sys.stderr.write(f"no log lines for run {run_id}" + (f" step {args.step}" if args.step else "")
                                 + "\n")
            return 0
        if lines:
            continue
        status = await client.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
        if status in ("completed", "failed", "cancelled"):
            finished_polls += 1
            if finished_polls > 2:  # lines are written up to a flush interval after the run ends
                return 0
        await asyncio.sleep(0.5)


# -- export ----------------------------------------------------------------------------------
async def run_spans(pool: Any, run_id: str, *, now: float | None = None) -> list[SpanRecord]:
    """The run's spans: derived from its events (unfinished ones ended now), plus stored child spans."""
    from worker.store.spans import load_run_for_export, load_spans, load_step_kinds
    from worker.telemetry.export import from_row
    from worker.telemetry.spans import RunTracer

    found = await load_run_for_export(pool, run_id)
    if found is None:
        raise NotFound(f"no run {run_id!r}")
    info, events = found
    kinds = (await load_step_kinds(pool, [info.def_hash])).get(info.def_hash, {})
    tracer = RunTracer(run_id, traceparent=info.traceparent, kinds=kinds, workflow=info.workflow)
    derived = tracer.feed_all(events) + tracer.open_spans(now if now is not None else time.time())
    by_id = {s.span_id: s for s in derived}
    for row in await load_spans(pool, run_id):
        record = from_row(run_id, row)
        by_id.setdefault(record.span_id, record)
    return sorted(by_id.values(), key=lambda s: (s.start, -s.end))


async def cmd_export(client: Any, args: argparse.Namespace) -> int:
    from worker.store.runs import load_events

    run_id = await client.resolve_run_id(args.run_id)
    if args.format == "events":
        row = await client.pool.fetchrow(
            "SELECT workflow, def_hash, status, traceparent FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        events = await load_events(client.pool, run_id)
        body: Any = {"run_id": run_id, "workflow": row["workflow"], "def_hash": row["def_hash"],
                     "status": row["status"], "traceparent": row["traceparent"],
                     "events": [{"seq": e.seq, "ts": datetime.fromtimestamp(e.ts, tz=UTC).isoformat(),
                                 "type": e.type, "step_id": e.step_id, "item": e.item, "attempt": e.attempt,
                                 "data": e.data} for e in events]}
    else:
        from worker.telemetry.export import otlp_json

        body = otlp_json(await run_spans(client.pool, run_id))
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.output.write_bytes(data)
        sys.stderr.write(f"wrote {args.output} ({args.format})\n")
    return 0


# -- trace -----------------------------------------------------------------------------------
async def cmd_trace(client: Any, args: argparse.Namespace) -> int:
    run_id = await client.resolve_run_id(args.run_id)
    spans = await run_spans(client.pool, run_id)
    if args.json:
        sys.stdout.write(orjson.dumps([s.to_row() for s in spans], option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    children: dict[int | None, list[SpanRecord]] = {}
    ids = {s.span_id for s in spans}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in ids else None, []).append(s)
    t0 = min((s.start for s in spans), default=0.0)
    if spans:
        sys.stdout.write(f"trace {spans[0].trace_id:032x}\n")

    def walk(parent: int | None, depth: int) -> None:
        for s in children.get(parent, []):
            mark = {"error": " ✗", "ok": ""}.get(s.status, "")
            if s.attributes.get("agentrt.attempt.crashed"):
                mark += " (crashed)"
            if s.attributes.get("agentrt.in_progress"):
                mark += " (in progress)"
            sys.stdout.write(f"{(s.start - t0) * 1000:9.1f}ms {(s.end - s.start) * 1000:9.1f}ms  "
                             f"{'  ' * depth}{s.name}{mark}\n")
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return 0
