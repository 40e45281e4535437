"""Scale benchmark: a year of production in one database (1M runs by default, 10M with `--runs 10000000`).

Generates N runs with realistic rows (a status mix that is mostly completed, some failed, a few thousand
live runs; ~20 workflows of skewed popularity over ~12 months of created_at; ~8 events per run; ~6 spans and
some step logs per run of the last `--telemetry-days` (7: what the default telemetry retention keeps); pending
human tasks for the runs waiting on a person, decided ones in the history) with COPY in batches, then measures
the interactive read paths through `worker.client.RuntimeClient` (what the console, the CLI and the API call):
p50/p99 over `--reps` repetitions, target p99 < 100 ms. A path over its target gets `EXPLAIN (ANALYZE,
BUFFERS)` of its slowest statement printed (and saved in the results).

History is partitioned (migrations 0016-0018, worker/history/): a run's `history_at` is its created_at and its
events carry it; every day of the year gets its `events_pYYYYMMDD` partition (agentrt_history_partition) before
the COPY: ~365 partitions is what a year of production with a year of retention looks like. Spans and step
logs of past days land in their legacy partition. Then bench/scale_history.py measures what partitioning
changes: one run's events over ~365 partitions (plans, planning time), retention of the oldest days while a
worker appends (`--retention-days`, destructive: it drops them), and the engine benchmark's 500 concurrent
10-step runs on this database vs an empty one (`--throughput-rounds`).

Postgres and Redis come from the wheels (worker/devstack), like the other benches. `--keep DIR` keeps the
generated cluster in DIR; `--reuse DIR` measures a kept one again (pending migrations are applied first, and
timed: how long a new migration takes on this many rows). Results: bench/results/scale.json.

    python bench/scale.py [--runs 1000000] [--reps 20] [--keep DIR | --reuse DIR] [--generate-only]
    python bench/scale.py --runs 10000000 --events-per-run 8 --spans-per-run 6 --keep /var/tmp/scale10m

Disk: at most 3.9 KB per run with the default 8 events and 6 spans (a year of spans; with 7 days of them,
about 2 KB: see bench/README.md); the generator refuses to start when the data folder's disk has less than
the larger figure (plus 20 %) free. Time: ~3,000 runs/s on 2 busy cores, most of it in this process making
the COPY text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.devstack import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from worker.devstack.postgres import create_database  # noqa: E402
from worker.search.filters import RunFilter  # noqa: E402
from worker.store.migrate import migrate  # noqa: E402
from worker.store.pool import create_pool  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from scale_history import events_plans, print_history, retention, throughput  # noqa: E402

DB = "scale"
TARGET_MS = 100.0
BYTES_PER_RUN = 3900  # measured at 1M runs with 8 events and 6 spans per run (tables + indexes)
DAY = 86400.0

# -- what a year of production looks like -----------------------------------------------------------------
WORKFLOWS = [  # (name, steps as (id, uses)), popularity falls off like a Zipf law
    ("support-triage", [("fetch_ticket", "http"), ("classify", "agent"), ("route", "python")]),
    ("invoice-extract", [("download", "http"), ("extract", "agent"), ("post_ledger", "http")]),
    ("refund-request", [("lookup", "http"), ("approve", "approval"), ("refund", "http")]),
    ("lead-enrich", [("search", "http"), ("summarize", "agent"), ("crm_update", "http")]),
    ("nightly-report", [("query", "python"), ("render", "http"), ("send", "http")]),
    ("doc-summarize", [("fetch", "http"), ("chunk", "python"), ("summarize", "agent")]),
    ("code-review", [("diff", "http"), ("review", "agent"), ("comment", "http")]),
    ("kyc-check", [("collect", "http"), ("verify", "agent"), ("decide", "approval")]),
    ("churn-alert", [("score", "python"), ("draft", "agent"), ("notify", "http")]),
    ("contract-redline", [("parse", "python"), ("redline", "agent"), ("sign_off", "approval")]),
    ("order-sync", [("pull", "http"), ("transform", "python"), ("push", "http")]),
    ("faq-answer", [("retrieve", "python"), ("answer", "agent"), ("reply", "http")]),
    ("incident-digest", [("gather", "http"), ("summarize", "agent"), ("post", "http")]),
    ("translate-batch", [("split", "python"), ("translate", "agent"), ("merge", "python")]),
    ("vendor-onboard", [("form", "http"), ("screen", "agent"), ("approve", "approval")]),
    ("expense-audit", [("load", "http"), ("audit", "agent"), ("flag", "http")]),
    ("sentiment-scan", [("fetch", "http"), ("score", "agent"), ("store", "python")]),
    ("release-notes", [("commits", "http"), ("write", "agent"), ("publish", "http")]),
    ("data-backfill", [("plan", "python"), ("copy", "python"), ("verify", "python")]),
    ("legacy-import", [("read", "http"), ("map", "python"), ("write", "http")]),
]
WEIGHTS = [1 / (i + 1) ** 0.9 for i in range(len(WORKFLOWS))]
ERRORS = [
    "step {s}: HTTP 503 Service Unavailable from api.example.com (3 attempts)",
    "step {s}: timed out after 30s",
    "step {s}: HTTP 429 Too Many Requests from llm.example.net (5 attempts)",
    "step {s}: expression `inputs.customer.id` failed: no such key",
    "step {s}: ConnectionResetError: [Errno 104] Connection reset by peer",
    "step {s}: agent exceeded its budget of 40000 tokens",
    "step {s}: HTTP 500 from erp.internal (request id {n:x})",
    "step {s}: output does not match its schema: 'amount' is a required property",
]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "group:finance", "group:legal", "group:support"]
TRIGGERS = ["api", "api", "api", "schedule", "event", "cli", "webhook"]
# live runs do not grow with history: a fixed few thousand, all recent
LIVE = {"running": 400, "pending": 60, "queued": 300, "paused": 120, "waiting": 3000}
WAITING_ON = [("human", 0.6), ("event", 0.2), ("retry", 0.12), ("sleep", 0.05), ("child", 0.03)]
FAILED, CANCELLED = 0.06, 0.015


def esc(text: str) -> str:
    """A value for COPY's text format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


class Clock:
    """Timestamps as COPY text, fast: the `YYYY-MM-DD HH:MM:` part is cached per minute."""

    def __init__(self) -> None:
        self._minutes: dict[int, str] = {}

    def __call__(self, t: float) -> str:
        m = int(t // 60)
        head = self._minutes.get(m)
        if head is None:
            head = datetime.fromtimestamp(m * 60, tz=UTC).strftime("%Y-%m-%d %H:%M:")
            if len(self._minutes) > 200_000:
                self._minutes.clear()
            self._minutes[m] = head
        return f"{head}{t - m * 60:09.6f}+00"


@dataclass
class Batch:
    runs: list[str]
    events: list[str]
    spans: list[str]
    logs: list[str]
    tasks: list[str]


RUN_COLUMNS = ["run_id", "workflow", "def_hash", "status", "inputs", "output", "error", "created_at", "updated_at",
               "finished_at", "current_step", "waiting_on", "requested_by", "lease_owner", "lease_expires",
               "wake_at", "trigger", "next_seq", "paused_by", "paused_at", "history_at"]
EVENT_COLUMNS = ["run_id", "seq", "ts", "type", "step_id", "item", "attempt", "data", "history_at"]
SPAN_COLUMNS = ["run_id", "span_id", "trace_id", "parent_id", "name", "kind", "start_ts", "end_ts", "status",
                "status_message", "attributes", "created_at"]
LOG_COLUMNS = ["run_id", "step_id", "attempt", "ts", "level", "logger", "message", "trace_id", "span_id"]
TASK_COLUMNS = ["task_id", "run_id", "step_id", "kind", "status", "prompt", "context", "created_at", "decided_at",
                "decided_by", "approvers", "requested_by"]
N = "\\N"


class Generator:
    """Runs in creation order (oldest first) over `days`; the last LIVE runs are the live ones."""

    def __init__(self, n: int, events_per_run: int, spans_per_run: int, days: float, seed: int = 7,
                 telemetry_days: float = 7) -> None:
        self.n, self.epr, self.spr = n, events_per_run, spans_per_run
        self.rnd = random.Random(seed)
        self.now = time.time()
        self.t0 = self.now - days * DAY
        self.span = days * DAY
        self.ts = Clock()
        self.live_from = n - sum(LIVE.values())
        live = [s for s, k in LIVE.items() for _ in range(k)]
        self.rnd.shuffle(live)
        self.live = live
        self.workers = [f"worker-{i}" for i in range(4)]
        self.mid_run: str | None = None
        self.recent_run: str | None = None
        """A finished run of ~3 days ago: its spans and logs exist (telemetry is kept `telemetry_days`)."""
        self.telemetry_from = self.now - telemetry_days * DAY

    def created(self, i: int) -> float:
        # busier lately: the share of runs grows over the year (x^1.3), live runs within the last hours
        if i >= self.live_from:
            k = i - self.live_from
            return self.now - 6 * 3600 * (1 - k / max(1, self.n - self.live_from)) - 1
        x = i / max(1, self.live_from)
        return self.t0 + self.span * (x ** (1 / 1.3)) * 0.9995

    def batch(self, lo: int, hi: int) -> Batch:
        rnd, ts = self.rnd, self.ts
        b = Batch([], [], [], [], [])
        choices = rnd.choices(range(len(WORKFLOWS)), WEIGHTS, k=hi - lo)
        for i, w in zip(range(lo, hi), choices, strict=True):
            name, steps = WORKFLOWS[w]
            rid = f"{rnd.getrandbits(128):032x}"
            if i == self.n // 2:
                self.mid_run = rid
            created = self.created(i)
            if self.recent_run is None and i < self.live_from and created > self.now - 3 * DAY:
                self.recent_run = rid
            status = self.live[i - self.live_from] if i >= self.live_from else (
                "failed" if (u := rnd.random()) < FAILED else "cancelled" if u < FAILED + CANCELLED else "completed")
            trig = rnd.choice(TRIGGERS)
            who = rnd.choice(PEOPLE[:5]) if trig in ("api", "cli") else N
            inputs = (f'{{"ticket": "T-{i}", "customer": "cust-{rnd.randrange(5000)}", '
                      f'"priority": {rnd.randrange(4)}}}')
            dur = rnd.expovariate(1 / 45)
            out = err = fin = cur = wait = owner = lease = wake = pby = pat = N
            upd = created + dur
            nsteps = len(steps)
            reached = nsteps  # steps started
            if status == "completed":
                fin = ts(upd)
                label = rnd.choice(("refund", "bug", "question", "billing"))
                out = f'{{"ok": true, "label": "{label}", "n": {i % 97}}}'
            elif status in ("failed", "cancelled"):
                reached = rnd.randrange(1, nsteps + 1)
                fin = ts(upd)
                sid = steps[reached - 1][0]
                err = (esc(rnd.choice(ERRORS).format(s=sid, n=i)) if status == "failed"
                       else f"cancelled by {rnd.choice(PEOPLE[:5])}: duplicate ticket")
            else:
                reached = rnd.randrange(1, nsteps + 1)
                upd = min(created + dur, self.now - 1)
                if status in ("running", "waiting", "paused"):
                    cur = steps[reached - 1][0]
                if status == "running":
                    owner, lease = rnd.choice(self.workers), ts(self.now + 3600)
                elif status == "paused":
                    pby, pat = "alice", ts(upd)
                elif status == "waiting":
                    kind = rnd.choices([k for k, _ in WAITING_ON], [w for _, w in WAITING_ON])[0]
                    if kind == "human":
                        wait = "human"
                    elif kind == "event":
                        wait = f"event customer.replied key T-{i}"
                    elif kind == "retry":
                        wait = f"retry {rnd.randrange(2, 5)}/5"
                        err = esc(ERRORS[0].format(s=cur, n=i))
                        wake = ts(self.now + rnd.uniform(5, 300))
                    else:
                        wait = kind
                    if wait == "human":
                        b.tasks.append("\t".join((
                            f"{rnd.getrandbits(128):032x}", rid, cur, "approval", "pending",
                            f"Approve {name} for T-{i}?", '{"amount": 120}', ts(upd), N, N,
                            "{" + ",".join(sorted(set(rnd.sample(PEOPLE, rnd.randrange(0, 3))))) + "}", who)))
            b.runs.append("\t".join((rid, name, f"bench-{w}", status, inputs, out, err, ts(created), ts(upd), fin,
                                     cur, wait, who, owner, lease, wake, trig, str(self.epr + 1), pby, pat,
                                     ts(created))))
            if status not in ("pending", "queued"):
                self._history(b, rid, name, steps, reached, status, created, upd)
            if status == "completed" and (steps[-1][1] == "approval" or i % 40 == 0):
                b.tasks.append("\t".join((
                    f"{rnd.getrandbits(128):032x}", rid, steps[-1][0], "approval", "approved",
                    f"Approve {name} for T-{i}?", '{"amount": 80}', ts(created + dur / 2), ts(upd - 1),
                    rnd.choice(PEOPLE[:5]), "{}", who)))
        return b

    def _history(self, b: Batch, rid: str, name: str, steps: list[tuple[str, str]], reached: int, status: str,
                 t0: float, t1: float) -> None:
        """~epr events, ~spr spans and (for one run in three) a few log lines."""
        rnd, ts = self.rnd, self.ts
        trace = f"{rnd.getrandbits(128):032x}"
        root = f"{rnd.getrandbits(64):016x}"
        rows = [("run.created", N, N, "{}")]
        per = (t1 - t0) / max(1, reached)
        for k in range(reached):
            sid = steps[k][0]
            last = k == reached - 1
            rows.append(("step.started", sid, "1", "{}"))
            if last and status == "failed":
                rows.append(("step.failed", sid, "1", '{"error": "HTTP 503", "retryable": true}'))
                rows.append(("step.started", sid, "2", "{}"))
                rows.append(("step.failed", sid, "2", '{"error": "HTTP 503", "retryable": false}'))
            elif last and status not in ("completed",):
                if status == "waiting":
                    rows.append(("step.waiting", sid, "1", '{"reason": "approval"}'))
            else:
                rows.append(("step.completed", sid, "1", f'{{"output": {{"n": {k}, "label": "ok"}}}}'))
        if status in ("completed", "failed", "cancelled"):
            rows.append((f"run.{status}", N, N, "{}"))
        while len(rows) < self.epr:  # a retried attempt or an LLM turn's usage, to reach ~epr per run
            rows.insert(-1, ("step.started", steps[0][0], "2", '{"note": "retry"}'))
        hist = ts(t0)  # the run's history_at: its created_at
        for seq, (typ, sid, att, data) in enumerate(rows[: max(self.epr, 2)], 1):
            b.events.append(f"{rid}\t{seq}\t{ts(t0 + per * seq / 2)}\t{typ}\t{sid}\t{N}\t{att}\t{data}\t{hist}")
        if t0 < self.telemetry_from:
            return  # spans and step logs are pruned after AGENTRT's telemetry retention (7 days by default)
        outcome = "error" if status == "failed" else "ok"
        b.spans.append(f"{rid}\t{root}\t{trace}\t{N}\trun {name}\tinternal\t{ts(t0)}\t{ts(t1)}\t"
                       f"{outcome}\t{N}\t{{\"agentrt.workflow\": \"{name}\"}}\t{ts(t1)}")
        for k in range(min(reached, self.spr - 1)):
            sid, uses = steps[k % len(steps)]
            s_id = f"{rnd.getrandbits(64):016x}"
            b.spans.append(f"{rid}\t{s_id}\t{trace}\t{root}\tstep {sid}\tinternal\t{ts(t0 + per * k)}\t"
                           f"{ts(t0 + per * (k + 1))}\tok\t{N}\t{{\"agentrt.step.id\": \"{sid}\", "
                           f"\"agentrt.step.uses\": \"{uses}\"}}\t{ts(t1)}")
            if uses in ("agent", "http") and k + reached < self.spr:
                b.spans.append(f"{rid}\t{rnd.getrandbits(64):016x}\t{trace}\t{s_id}\t{uses} call\tclient\t"
                               f"{ts(t0 + per * k)}\t{ts(t0 + per * (k + 0.8))}\tok\t{N}\t"
                               f"{{\"http.status_code\": 200}}\t{ts(t1)}")
        if rnd.random() < 0.33:
            for k in range(rnd.randrange(2, 6)):
                sid = steps[min(k, reached - 1)][0]
                b.logs.append(f"{rid}\t{sid}\t1\t{ts(t0 + per * k)}\t{'WARNING' if k == 3 else 'INFO'}\t"
                              f"workflow.{sid}\tprocessed {rnd.randrange(1, 500)} items for T-{k}\t{trace}\t{root}")


def disk_needed(runs: int, epr: int, spr: int) -> int:
    return int(runs * (BYTES_PER_RUN + (epr - 8) * 180 + (spr - 6) * 330) * 1.2)


# -- servers -------------------------------------------------------------------------------------------
@dataclass
class Servers:
    folder: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    fresh: bool

    def url(self, db: str = DB) -> str:
        return self.pg.url(db)


@asynccontextmanager
async def servers(keep: Path | None, reuse: Path | None) -> AsyncIterator[Servers]:
    folder = (reuse or keep or Path(tempfile.mkdtemp(prefix="agentrt-scale-"))).absolute()
    fresh = reuse is None
    if fresh and keep is not None and (keep / "pg" / "PG_VERSION").exists():
        raise SystemExit(f"{keep} already holds a database: --reuse {keep} to measure it again")
    if not fresh and not (folder / "pg" / "PG_VERSION").exists():
        raise SystemExit(f"{folder} holds no database (generate one with --keep {folder})")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)  # Postgres runs as an unprivileged user when we are root
    port_file = folder / "port"
    port = int(port_file.read_text()) if port_file.exists() else None
    pg = EmbeddedPostgres(folder / "pg", port, fsync=True)
    port_file.write_text(str(pg.port))
    redis = EmbeddedRedis(folder / "redis")
    pg.start()
    redis.start()
    try:
        if fresh:
            create_database(pg.url(), DB)
        yield Servers(folder, pg, redis, fresh)
    finally:
        redis.stop()
        pg.stop()
        if keep is None and reuse is None:
            shutil.rmtree(folder, ignore_errors=True)


# -- generation ----------------------------------------------------------------------------------------------
BIG_TABLES = ("runs", "events", "spans", "step_logs", "human_tasks")


async def relations(conn: asyncpg.Connection) -> list[str]:
    """The big tables and the partitions of the partitioned ones (events_legacy, events_pYYYYMMDD, ...)."""
    parts = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p
           ON p.oid = i.inhparent WHERE p.relname = ANY($1::text[]) AND p.relkind = 'p' AND c.relkind = 'r'""",
        list(BIG_TABLES))
    return [*BIG_TABLES, *(r["relname"] for r in parts)]


async def drop_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop the big tables' indexes and primary keys, the partitions' included (bulk load, then build each once);
    returns how to recreate them. A partitioned table's index (step_logs_run_idx_p) is dropped with its
    partitions' copies and recreated on the parent (built on every partition; the legacy one gets a new name).
    Foreign keys stay: COPY runs with session_replication_role = replica (no FK triggers; the rows are
    consistent by construction)."""
    tables = await relations(conn)
    rows = await conn.fetch(
        """SELECT c.conname AS name, t.relname AS tbl, pg_get_constraintdef(c.oid) AS def, c.contype AS kind
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
           WHERE t.relname = ANY($1::text[]) AND c.contype IN ('p', 'u') AND c.conparentid = 0""", tables)
    recreate = [f'ALTER TABLE "{r["tbl"]}" ADD CONSTRAINT "{r["name"]}" {r["def"]}' for r in rows]
    idx = await conn.fetch(
        """SELECT ic.relname AS name, pg_get_indexdef(ic.oid) AS def
           FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
           WHERE t.relname = ANY($1::text[])
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ic.oid AND c.conrelid = t.oid
                             AND c.contype IN ('p', 'u', 'x'))
             AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = ic.oid)""", tables)
    # foreign keys referencing a primary key need it: drop them too, and add them back (NOT VALID: not rechecked)
    fks = await conn.fetch(
        """SELECT c.conname AS name, t.relname AS tbl, pg_get_constraintdef(c.oid) AS def
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
           WHERE c.contype = 'f' AND c.conparentid = 0
             AND c.confrelid = ANY(SELECT oid FROM pg_class WHERE relname = ANY($1::text[]))""", tables)
    for fk in fks:
        await conn.execute(f'ALTER TABLE "{fk["tbl"]}" DROP CONSTRAINT "{fk["name"]}"')
    for r in rows:
        await conn.execute(f'ALTER TABLE "{r["tbl"]}" DROP CONSTRAINT "{r["name"]}"')
    for r in idx:
        await conn.execute(f'DROP INDEX "{r["name"]}"')
    indexes = [r["def"].replace(" ON ONLY ", " ON ") for r in idx]
    return recreate + indexes + [f'ALTER TABLE "{fk["tbl"]}" ADD CONSTRAINT "{fk["name"]}" {fk["def"]} NOT VALID'
                                 for fk in fks]


async def day_partitions(conn: asyncpg.Connection, first: float, last: float) -> int:
    """One `events` partition per (UTC) day of the generated history, as agentrt_history_partition makes them:
    a year of production with a year of retention is ~365 of them. Spans and step logs of past days belong to
    the legacy partition (before `history_partitioning.legacy_until`, which lies ahead of any generated time)."""
    made = 0
    day = datetime.fromtimestamp(first - first % DAY, tz=UTC)
    while day.timestamp() <= last:
        made += bool(await conn.fetchval("SELECT agentrt_history_partition('events', $1)", day))
        day = datetime.fromtimestamp(day.timestamp() + DAY, tz=UTC)
    return made


async def generate(url: str, args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    gen = Generator(args.runs, args.events_per_run, args.spans_per_run, args.days,
                    telemetry_days=args.telemetry_days)
    conn = await asyncpg.connect(url)
    counts = dict.fromkeys(("runs", "events", "spans", "step_logs", "human_tasks"), 0)
    try:
        await conn.execute("SET session_replication_role = replica; SET synchronous_commit = off")
        for w, (name, steps) in enumerate(WORKFLOWS):
            spec = {"name": name, "steps": [{"id": s, "uses": u} for s, u in steps]}
            await conn.execute("INSERT INTO definitions (def_hash, name, spec, source) VALUES ($1, $2, $3, '')",
                               f"bench-{w}", name, json.dumps(spec))
        for k in range(12):  # workers: the live ones and the ones of the last months' deploys
            alive = k < 4
            await conn.execute(
                """INSERT INTO workers (worker_id, hostname, pid, concurrency, started_at, heartbeat_at, stopped_at,
                                        held_runs, liveness_at)
                   VALUES ($1, $2, $3, 200, now() - make_interval(days => $4), now() - make_interval(days => $4) +
                           CASE WHEN $5 THEN make_interval(days => $4) ELSE interval '3 days' END,
                           CASE WHEN $5 THEN NULL ELSE now() - make_interval(days => $4) + interval '3 days' END,
                           100, now())""",
                f"worker-{k}", f"host-{k % 3}", 1000 + k, k * 7, alive)
        t = time.perf_counter()
        parts = await day_partitions(conn, gen.t0, gen.now)
        t_parts = time.perf_counter() - t
        print(f"created {parts} daily partitions of events in {t_parts:.1f}s", flush=True)
        recreate = await drop_indexes(conn)
        batch = args.batch
        print(f"generating {args.runs:,} runs in batches of {batch:,} (~{args.events_per_run} events, "
              f"~{args.spans_per_run} spans per run) ...", flush=True)
        last = time.perf_counter()
        for lo in range(0, args.runs, batch):
            b = gen.batch(lo, min(args.runs, lo + batch))
            for table, cols, lines in (("runs", RUN_COLUMNS, b.runs), ("events", EVENT_COLUMNS, b.events),
                                       ("spans", SPAN_COLUMNS, b.spans), ("step_logs", LOG_COLUMNS, b.logs),
                                       ("human_tasks", TASK_COLUMNS, b.tasks)):
                if lines:
                    await conn.copy_to_table(table, source=_chunks(lines), columns=cols, format="text")
                    counts[table] += len(lines)
            done = min(args.runs, lo + batch)
            if time.perf_counter() - last > 5 or done == args.runs:
                last = time.perf_counter()
                el = last - t_start
                print(f"  {done:>11,} runs  {counts['events']:>12,} events  {counts['spans']:>12,} spans  "
                      f"{el:6.0f}s  ({done / el:,.0f} runs/s)", flush=True)
        t_copy = time.perf_counter() - t_start
        print(f"building {len(recreate)} indexes and keys ...", flush=True)
        await conn.execute("SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 2")
        t = time.perf_counter()
        for sql in recreate:
            t1 = time.perf_counter()
            await conn.execute(sql)
            if time.perf_counter() - t1 > 1 or "events_p" not in sql:  # not the 365 small partitions' keys
                print(f"  {time.perf_counter() - t1:6.1f}s  {sql[:110]}", flush=True)
        t_index = time.perf_counter() - t
        t = time.perf_counter()
        print("VACUUM ANALYZE (what autovacuum does to a year-old table) ...", flush=True)
        for table in (*BIG_TABLES, "workers", "definitions"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        t_vacuum = time.perf_counter() - t
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        tables = {t: int(await conn.fetchval(  # a partitioned table's size is its partitions'
            """SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.oid = $1::regclass
                  OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)""", t))
                  for t in BIG_TABLES}
    finally:
        await conn.close()
    total = time.perf_counter() - t_start
    return {"runs": args.runs, "rows": counts, "copy_s": round(t_copy, 1), "index_s": round(t_index, 1),
            "vacuum_analyze_s": round(t_vacuum, 1), "total_s": round(total, 1), "database_bytes": size,
            "table_bytes": tables, "mid_run": gen.mid_run, "recent_run": gen.recent_run,
            "events_partitions_made": parts, "partitions_s": round(t_parts, 1),
            "telemetry_days": args.telemetry_days, "generated_at": datetime.now(tz=UTC).isoformat()}


async def _chunks(lines: list[str]) -> AsyncIterator[bytes]:
    step = 20_000
    for k in range(0, len(lines), step):
        yield ("\n".join(lines[k:k + step]) + "\n").encode()


# -- measurement -------------------------------------------------------------------------------------------
class Recorder:
    """The client's pool, recording each statement (sql, args, ms) while `on`: the slowest one of a path over
    its target is EXPLAINed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.on = False
        self.seen: list[tuple[str, tuple[Any, ...], float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def _timed(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(sql: str, *args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await getattr(self._pool, method)(sql, *args, **kw)
            finally:
                if self.on:
                    self.seen.append((sql, args, (time.perf_counter() - t) * 1000))
        return call

    @property
    def fetch(self) -> Callable[..., Awaitable[Any]]:
        return self._timed("fetch")

    @property
    def fetchrow(self) -> Callable[..., Awaitable[Any]]:
        return self._timed("fetchrow")

    @property
    def fetchval(self) -> Callable[..., Awaitable[Any]]:
        return self._timed("fetchval")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))] if values else float("nan")


async def measure(client: RuntimeClient, reps: int, mid_run: str, explain: bool,
                  recent_run: str | None = None) -> list[dict[str, Any]]:
    rec = Recorder(client.pool)
    pool = rec._pool
    shared_reader = client.reader is pool  # reads go to `reader` (a replica when configured, else the pool)
    client.pool = rec  # type: ignore[assignment]
    if shared_reader:
        client.reader = rec  # type: ignore[assignment]
    wf_popular, wf_mid, wf_rare = WORKFLOWS[0][0], WORKFLOWS[5][0], WORKFLOWS[-1][0]
    newest = await pool.fetch("SELECT created_at FROM runs ORDER BY created_at DESC LIMIT 1 OFFSET 499")
    page2 = newest[0]["created_at"] if newest else None
    prefix = mid_run.replace("-", "")[:8]
    from worker.store.spans import load_spans

    async def refresh() -> None:  # what the console's runs screen does on a refresh
        await client.list_runs(limit=500)
        await client.count_runs()
        await client.count_retrying()
        await client.list_tasks(status="pending")
        await client.list_workflows()

    paths: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
        ("runs list", "newest, first page (500: the console)", lambda: client.list_runs(limit=500)),
        ("runs list", "newest, 50 (agentrt runs)", lambda: client.list_runs(limit=50)),
        ("runs list", "next page (before=500th)", lambda: client.list_runs(limit=500, before=page2)),
        ("runs list", "order oldest", lambda: client.list_runs(limit=500, order="oldest")),
        ("runs list", "order longest", lambda: client.list_runs(limit=500, order="longest")),
        ("runs list", "order workflow", lambda: client.list_runs(limit=500, order="workflow")),
        ("by status", "failed (agentrt runs --status failed)", lambda: client.list_runs(status="failed", limit=500)),
        ("by status", "running", lambda: client.list_runs(status="running", limit=500)),
        ("by status", "waiting", lambda: client.list_runs(status="waiting", limit=500)),
        ("by status", "retrying", lambda: client.list_runs(status="retrying", limit=500)),
        ("by status", "paused", lambda: client.list_runs(status="paused", limit=500)),
        ("by status", "cancelled", lambda: client.list_runs(status="cancelled", limit=500)),
        ("by workflow", f"{wf_popular} (most runs)", lambda: client.list_runs(workflow=wf_popular, limit=500)),
        ("by workflow", f"{wf_rare} (fewest runs)", lambda: client.list_runs(workflow=wf_rare, limit=500)),
        ("filter", f"workflow={wf_mid} status=failed since=30d",
         lambda: client.list_runs(limit=500, filters=RunFilter(workflow=wf_mid, status="failed", since="30d"))),
        ("filter", f"workflow={wf_rare} status=failed",
         lambda: client.list_runs(limit=500, filters=RunFilter(workflow=wf_rare, status="failed"))),
        ("filter", "status=completed since=2h",
         lambda: client.list_runs(limit=500, filters=RunFilter(status="completed", since="2h"))),
        ("filter", f"workflow={wf_mid} step=summarize",
         lambda: client.list_runs(limit=500, filters=RunFilter(workflow=wf_mid, step="summarize"))),
        ("filter", "error='budget'", lambda: client.list_runs(limit=500, filters=RunFilter(error="budget"))),
        ("filter", "error='no such text'",
         lambda: client.list_runs(limit=500, filters=RunFilter(error="no such text"))),
        ("filter", "waiting=human", lambda: client.list_runs(limit=500, filters=RunFilter(waiting="human"))),
        ("filter", "waiting=event", lambda: client.list_runs(limit=500, filters=RunFilter(waiting="event"))),
        ("filter", "waiting=sleep (fewer than 500)",
         lambda: client.list_runs(limit=500, filters=RunFilter(waiting="sleep"))),
        ("filter", "waiting=alice (may decide)",
         lambda: client.list_runs(limit=500, filters=RunFilter(waiting="alice"))),
        ("search", "'503' (common)", lambda: client.list_runs(limit=500, search="503")),
        ("search", "'zzz-nothing' (no match)", lambda: client.list_runs(limit=500, search="zzz-nothing")),
        ("search", "'503' within failed", lambda: client.list_runs(limit=500, status="failed", search="503")),
        ("search", "a run id prefix", lambda: client.list_runs(limit=500, search=prefix)),
        ("counts", "count_runs() (status tabs)", client.count_runs),
        ("counts", "count_retrying()", client.count_retrying),
        ("run", "get_run(a run in the middle)", lambda: client.get_run(mid_run)),
        ("run", "its spans (waterfall)", lambda: client.spans(mid_run)),
        ("run", "its spans (store.load_spans)", lambda: load_spans(pool, mid_run)),
        ("run", "its step logs", lambda: client.step_logs(mid_run)),
        *([("run", "get_run(a run of 3 days ago)", lambda: client.get_run(recent_run)),
           ("run", "its spans (waterfall, 3 days ago)", lambda: client.spans(recent_run)),
           ("run", "its step logs (3 days ago)", lambda: client.step_logs(recent_run))] if recent_run else []),
        ("run", "get_run(8-char id prefix) (agentrt show)", lambda: client.get_run(prefix)),
        ("approvals", "inbox: list_tasks(status=pending)", lambda: client.list_tasks(status="pending")),
        ("workers", "list_workers()", client.list_workers),
        ("console", "runs screen refresh (list+counts+tasks+wfs)", refresh),
    ]
    results = []
    for group, name, call in paths:
        for _ in range(2):  # warm the cache and the prepared statement
            await call()
        samples = []
        rows = None
        for _ in range(reps):
            t = time.perf_counter()
            got = await call()
            samples.append((time.perf_counter() - t) * 1000)
            rows = len(got) if isinstance(got, list | dict) else (len(got.events) if hasattr(got, "events") else got)
        p50, p99 = statistics.median(samples), pct(samples, 99)
        target = TARGET_MS * (3 if group == "console" else 1)
        r: dict[str, Any] = {"group": group, "path": name, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                             "rows": rows if isinstance(rows, int) else str(rows), "target_ms": target,
                             "ok": p99 < target}
        if not r["ok"] and explain:
            rec.seen.clear()
            rec.on = True
            await call()
            rec.on = False
        if not r["ok"] and explain and rec.seen:
            sql, a, ms = max(rec.seen, key=lambda s: s[2])
            plan = await pool.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *a)
            r["slowest_sql_ms"] = round(ms, 1)
            r["explain"] = [p[0] for p in plan]
        results.append(r)
        print(f"  {group:11} {name:48} p50 {p50:8.1f}  p99 {p99:8.1f} ms  {'ok' if r['ok'] else 'SLOW'}",
              flush=True)
    client.pool = pool
    if shared_reader:
        client.reader = pool
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    keep = Path(args.keep) if args.keep else None
    reuse = Path(args.reuse) if args.reuse else None
    folder = reuse or keep or Path(tempfile.gettempdir())
    if reuse is None:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
        need = disk_needed(args.runs, args.events_per_run, args.spans_per_run)
        if free < need:
            raise SystemExit(f"{args.runs:,} runs need about {need / 1e9:.1f} GB; {free / 1e9:.1f} GB free there")
    out: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg(), "reps": args.reps}
    async with servers(keep, reuse) as srv:
        meta_file = srv.folder / "scale-meta.json"
        if srv.fresh:
            t = time.perf_counter()
            await migrate(srv.url())
            out["migrate_empty_s"] = round(time.perf_counter() - t, 2)
            out["generation"] = await generate(srv.url(), args)
            meta_file.write_text(json.dumps(out["generation"], indent=2))
        else:
            out["generation"] = json.loads(meta_file.read_text())
            t = time.perf_counter()
            applied = await migrate(srv.url())
            out["migrations_applied"] = {"names": applied, "seconds": round(time.perf_counter() - t, 2)}
            if applied:
                print(f"applied {', '.join(applied)} on the populated database in "
                      f"{out['migrations_applied']['seconds']:.1f}s", flush=True)
        g = out["generation"]
        print(f"database: {g['runs']:,} runs, {g['rows']['events']:,} events, {g['rows']['spans']:,} spans, "
              f"{g['rows']['step_logs']:,} step logs, {g['rows']['human_tasks']:,} human tasks; "
              f"{g['database_bytes'] / 1e9:.2f} GB; generated in {g['total_s']:.0f}s "
              f"(COPY {g['copy_s']:.0f}s, indexes {g['index_s']:.0f}s, VACUUM ANALYZE {g['vacuum_analyze_s']:.0f}s)",
              flush=True)
        if args.generate_only:
            return out
        client = await RuntimeClient.connect(Settings(database_url=srv.url(), redis_url=srv.redis.url(),
                                                      workflows_dir=srv.folder / "workflows",
                                                      redis_prefix="scale"))
        try:
            out["database_bytes_now"] = await client.pool.fetchval("SELECT pg_database_size(current_database())")
            print(f"measuring {args.reps} repetitions of each path (p99 target {TARGET_MS:.0f} ms) ...", flush=True)
            out["paths"] = (await measure(client, args.reps, g["mid_run"], not args.no_explain, g.get("recent_run"))
                            if args.reps else [])
        finally:
            await client.close()
        await history_measurements(srv, args, g, out)
    out["load_after"] = os.getloadavg()
    return out


async def history_measurements(srv: Servers, args: argparse.Namespace, g: dict[str, Any],
                               out: dict[str, Any]) -> None:
    """bench/scale_history.py's: events plans, retention under appends, throughput big vs empty. A failure is
    recorded (`<name>_error`) and the next one goes on."""
    import traceback

    pool = await create_pool(srv.url(), min_size=1, max_size=2)
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("events_plans", lambda: events_plans(pool, {k: v for k, v in (("mid", g["mid_run"]),
                                                                         ("recent", g.get("recent_run"))) if v})),
    ]
    if args.retention_days:
        steps.append(("retention", lambda: retention(srv.url(), args.retention_days)))
    if args.throughput_rounds:
        steps.append(("throughput", lambda: throughput(srv.pg, srv.redis, srv.folder, DB, args.throughput_runs,
                                                       10, args.throughput_rounds)))
    try:
        for name, call in steps:
            print(f"{name} ...", flush=True)
            try:
                out[name] = await call()
            except Exception as exc:  # noqa: BLE001 - reported with the results, the other measurements go on
                traceback.print_exc()
                out[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await pool.close()


def print_table(r: dict[str, Any]) -> None:
    g = r["generation"]
    print(f"\nAgentRuntime scale benchmark: {g['runs']:,} runs, {g['database_bytes'] / 1e9:.2f} GB "
          f"({r['cores']} cores, load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f})")
    print(f"{'':11} {'path':48} {'p50 ms':>9} {'p99 ms':>9} {'rows':>7}")
    for p in r["paths"]:
        flag = "" if p["ok"] else f"  SLOW (target {p['target_ms']:.0f})"
        print(f"{p['group']:11} {p['path']:48} {p['p50_ms']:9.1f} {p['p99_ms']:9.1f} {p['rows']!s:>7}{flag}")
    for p in r["paths"]:
        if "explain" in p:
            print(f"\n-- {p['group']}: {p['path']} (slowest statement {p['slowest_sql_ms']} ms)")
            print("\n".join(p["explain"]))
    print_history(r)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--events-per-run", type=int, default=8)
    p.add_argument("--spans-per-run", type=int, default=6)
    p.add_argument("--days", type=float, default=365)
    p.add_argument("--telemetry-days", type=float, default=7,
                   help="spans and step logs for the runs of the last N days only (the default retention: 7)")
    p.add_argument("--batch", type=int, default=50_000, help="runs per COPY batch")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (measure again with --reuse DIR)")
    p.add_argument("--reuse", metavar="DIR", help="measure the database kept in DIR (no generation)")
    p.add_argument("--no-explain", action="store_true", help="no EXPLAIN of the paths over their target")
    p.add_argument("--retention-days", type=int, default=3,
                   help="drop_run_history for the N oldest days, one at a time (0: skip; it deletes them)")
    p.add_argument("--throughput-rounds", type=int, default=1,
                   help="rounds of the engine benchmark's concurrent runs, big database vs empty (0: skip)")
    p.add_argument("--throughput-runs", type=int, default=500)
    p.add_argument("--generate-only", action="store_true", help="with --keep: generate, measure nothing")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = p.parse_args()
    if args.keep and args.reuse:
        p.error("--keep or --reuse, not both")
    r = asyncio.run(main_async(args))
    if args.generate_only:
        print(json.dumps(r["generation"], indent=2))
        return
    print_table(r)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(r, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
