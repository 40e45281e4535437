"""The partitioned-history measurements of bench/scale.py (issue 21): one run's events on ~365 daily partitions
(plans, planning time), retention of a day while a worker appends, and worker throughput on the big database vs
an empty one. Split from scale.py, which generates the data and times the interactive read paths.

- `events_plans`: one run's events read the two ways: naming the run's partition through a subquery (how the
  first version of partitioned history did it: pruned only while executing) and with the run's history_at as a
  parameter (`worker.store.runs.RUN_EVENTS`, what the runtime does now: pruned when planned): EXPLAIN ANALYZE
  of a custom and of a generic plan, and the statement timed as the client sends it (a prepared statement:
  custom plans first, generic after 5 runs).
- `retention`: `worker.history.retention.drop_run_history` with its cutoff at the end of the oldest day, for the
  N oldest days one at a time, while a task appends single events to live runs with the engine's own statement
  (`worker.store.writer.write_batch`); append latency before vs during.
- `throughput`: bench/engine_bench.py's 500 concurrent 10-step runs through one `agentrt worker`, on the big
  database and on a fresh empty one of the same server (its functions imported, not changed).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from engine_bench import concurrent, worker_env, write_workflows  # noqa: E402
from stack import BenchServers, proc_stat, start_worker, stop_worker, wait_workflows  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.devstack import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from worker.devstack.postgres import create_database, drop_database  # noqa: E402
from worker.history.partitions import ensure, list_partitions  # noqa: E402
from worker.history.retention import drop_run_history  # noqa: E402
from worker.runlog import Event  # noqa: E402
from worker.store.migrate import migrate  # noqa: E402
from worker.store.pool import create_pool  # noqa: E402
from worker.store.runs import RUN_EVENTS  # noqa: E402
from worker.store.writer import Append, RunUpdate, write_batch  # noqa: E402

EVENTS_SQL = ("SELECT seq, ts, type, step_id, item, attempt, data FROM events WHERE run_id = $1 "
              "AND history_at = (SELECT history_at FROM runs WHERE run_id = $1) ORDER BY seq")
"""The first version: the partition named by a subquery (an InitPlan): pruned only while executing."""
EVENTS_SQL_PARAM = f"SELECT seq, ts, type, step_id, item, attempt, data FROM events WHERE {RUN_EVENTS} ORDER BY seq"
"""What the runtime sends: the caller passes the run's history_at (from the run row it read): pruned when
planned."""
STATEMENTS = {"subquery": EVENTS_SQL, "param": EVENTS_SQL_PARAM}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))] if values else float("nan")


def _ms(plan: list[str], label: str) -> float | None:
    for line in plan:
        if line.strip().startswith(label):
            return float(line.split(":")[1].split()[0])
    return None


def _plan_figures(plan: list[str]) -> dict[str, Any]:
    return {"planning_ms": _ms(plan, "Planning Time"), "execution_ms": _ms(plan, "Execution Time"),
            "partitions_in_plan": sum(" on events_" in p and "Bitmap Index" not in p for p in plan),
            "never_executed": sum(" on events_" in p and "Bitmap Index" not in p and "never executed" in p
                                  for p in plan),
            "subplans_removed": sum(int(p.split(":")[1]) for p in plan if "Subplans Removed" in p),
            "plan": plan}


async def events_plans(pool: asyncpg.Pool, runs: dict[str, str], reps: int = 50) -> dict[str, Any]:
    """For each named run and each statement (RUN_EVENTS as it is, and with history_at as a parameter):
    EXPLAIN ANALYZE of a custom and of a generic plan, and the statement timed as a prepared statement per
    plan_cache_mode (`auto`, what the application gets: custom plans for 5 executions, then generic if not
    costlier)."""
    out: dict[str, Any] = {"partitions": await pool.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")}
    for label, run_id in runs.items():
        r: dict[str, Any] = {"run_id": run_id}
        async with pool.acquire() as conn:
            hist = await conn.fetchval("SELECT history_at FROM runs WHERE run_id = $1", run_id)
            r["history_at"] = str(hist)
            for name, sql in STATEMENTS.items():
                args = (run_id,) if name == "subquery" else (run_id, hist)
                literals = ", ".join(f"'{a}'" for a in args)  # a uuid and a timestamptz: no quotes inside
                await conn.execute("SET plan_cache_mode = force_custom_plan")
                await conn.fetch(f"EXPLAIN (ANALYZE) {sql}", *args)  # warm
                custom = [p[0] for p in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)]
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE scale_q AS {sql}")
                try:
                    await conn.fetch(f"EXECUTE scale_q({literals})")  # builds and caches the generic plan
                    generic = [p[0] for p in await conn.fetch(
                        f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE scale_q({literals})")]
                finally:
                    await conn.execute("DEALLOCATE scale_q")
                r[name] = {"custom": _plan_figures(custom), "generic": _plan_figures(generic)}
                for mode in ("auto", "force_custom_plan", "force_generic_plan"):
                    await conn.execute(f"SET plan_cache_mode = {mode}")
                    stmt = await conn.prepare(sql)
                    samples = []
                    for _ in range(reps + 6):  # `auto` goes generic after 5 custom plans: the 6 first are warm-up
                        t = time.perf_counter()
                        await stmt.fetch(*args)
                        samples.append((time.perf_counter() - t) * 1000)
                    samples = samples[6:]
                    r[name][f"timed_{mode}"] = {"p50_ms": round(statistics.median(samples), 3),
                                                "p99_ms": round(pct(samples, 99), 3)}
            await conn.execute("RESET plan_cache_mode")
        out[label] = r
    return out


class Appender:
    """Single-event appends to a few live runs, round robin, with the engine's statement (write_batch): what a
    worker does for every step. Each append's latency is recorded in the current phase."""

    def __init__(self, pool: asyncpg.Pool, runs: list[asyncpg.Record]) -> None:
        self.pool = pool
        self.runs = [dict(r) for r in runs]
        self.phase = "before"
        self.samples: dict[str, list[float]] = {}
        self.fenced = 0
        self._stop = asyncio.Event()

    async def loop(self) -> None:
        k = 0
        async with self.pool.acquire() as conn:
            while not self._stop.is_set():
                run = self.runs[k % len(self.runs)]
                k += 1
                ev = Event(type="step.progress", ts=time.time(), step_id=run["current_step"], attempt=1,
                           data={"n": k}, seq=run["next_seq"])
                a = Append(str(run["run_id"]), run["lease_epoch"], [ev],
                           RunUpdate(status="running", current_step=run["current_step"]))
                t = time.perf_counter()
                ok = await write_batch(conn, run["lease_owner"], [a])
                self.samples.setdefault(self.phase, []).append((time.perf_counter() - t) * 1000)
                if a.run_id in ok:
                    run["next_seq"] += 1
                else:
                    self.fenced += 1
                await asyncio.sleep(0.005)  # ~a few hundred appends/s from one connection, leaving CPU to the rest

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> dict[str, Any]:
        return {phase: {"appends": len(s), "p50_ms": round(statistics.median(s), 2), "p99_ms": round(pct(s, 99), 2),
                        "max_ms": round(max(s), 2)} for phase, s in self.samples.items() if s}


async def retention(url: str, days: int) -> dict[str, Any]:
    """drop_run_history for the `days` oldest daily partitions, one at a time, with appends going on."""
    pool = await create_pool(url, min_size=2, max_size=6)
    try:
        live = await pool.fetch(  # 8 recent live runs, leased to this appender (as a worker takes a run over)
            """UPDATE runs SET status = 'running', lease_owner = 'scale-appender', lease_epoch = lease_epoch + 1,
                      lease_expires = now() + interval '1 hour', current_step = coalesce(current_step, 'step')
               WHERE run_id IN (SELECT run_id FROM runs WHERE status IN ('running', 'waiting')
                                ORDER BY created_at DESC LIMIT 8)
               RETURNING run_id, lease_owner, lease_epoch, next_seq, current_step""")
        parts = [p for p in await list_partitions(pool, "events") if not p.legacy][:days]
        app = Appender(pool, live)
        task = asyncio.create_task(app.loop())
        out: dict[str, Any] = {"days": []}
        try:
            await asyncio.sleep(3)  # the "before" baseline
            for part in parts:
                runs_in = await pool.fetchval("SELECT count(*) FROM runs WHERE history_at >= $1 AND history_at < $2",
                                              part.lo, part.hi)
                rows_in = await pool.fetchval(f'SELECT count(*) FROM "{part.name}"')
                app.phase = "during"
                t = time.perf_counter()
                s = await drop_run_history(pool, part.hi)
                took = time.perf_counter() - t
                app.phase = "before"
                left = await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", part.name)
                out["days"].append({"partition": part.name, "runs_in_day": runs_in, "events_in_day": rows_in,
                                    "seconds": round(took, 3), "dropped": s.dropped, "runs_deleted": s.runs,
                                    "moved": s.moved, "events_deleted": s.events, "tasks_deleted": s.tasks,
                                    "partition_still_there": left})
                print(f"  retention {part.name}: {took:.3f}s, {runs_in} runs ({s.runs} deleted, {s.moved} moved), "
                      f"{rows_in} events, dropped {s.dropped}", flush=True)
                await asyncio.sleep(1)
        finally:
            app.stop()
            await task
        try:
            out["parts"] = await _overheads(pool)
        except asyncpg.PostgresError as exc:  # a side figure: the days' results stand without it
            out["parts"] = {"error": str(exc)}
        secs = [d["seconds"] for d in out["days"]]
        out["p50_s"] = round(statistics.median(secs), 3) if secs else None
        out["appends"] = app.summary()
        out["appends_fenced"] = app.fenced
        return out
    finally:
        await pool.close()


async def _overheads(pool: asyncpg.Pool, reps: int = 5) -> dict[str, Any]:
    """What every drop_run_history pays before any run: ensure() and list_partitions('events') (which parses
    each partition's bounds with two extra queries), vs listing with the bounds cast in one statement."""
    one_sql = """SELECT c.relname, trim(both '''' from nullif(b[1], 'MINVALUE'))::timestamptz AS lo,
                        trim(both '''' from b[2])::timestamptz AS hi FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid,
                 LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                              'FROM \\((.*)\\) TO \\((.*)\\)') AS b) m
                 WHERE i.inhparent = 'events'::regclass"""
    out: dict[str, Any] = {"partitions": len(await list_partitions(pool, "events"))}
    for name, call in (("ensure", lambda: ensure(pool)), ("list_partitions", lambda: list_partitions(pool, "events")),
                       ("one_statement_list", lambda: pool.fetch(one_sql))):
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - t) * 1000)
        out[f"{name}_ms_p50"] = round(statistics.median(samples), 1)
    return out


LIVE = ("pending", "queued", "running", "waiting", "paused")


async def _live_counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {r["status"]: r["n"] for r in await pool.fetch(
        """SELECT status, count(*) AS n FROM runs WHERE workflow NOT IN ('seq', 'seq-async')
           AND status = ANY($1::text[]) GROUP BY status""", list(LIVE))}


def _tree_cpu(pg: EmbeddedPostgres) -> float:
    """CPU seconds of the postmaster and its children (backends, autovacuum, ...) alive now."""
    pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    total = proc_stat(pid)[1]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid, cpu = proc_stat(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                total += cpu
    return total


async def _settle(pool: asyncpg.Pool, limit_s: float = 300) -> dict[str, Any]:
    """Wait until the worker is done with the generated live runs it can act on: the generator's fictional
    workers hold no liveness lock, so a real worker takes their running runs over at once, starts the pending
    ones and wakes the due retries (their http steps call example.com and fail). Measured apart, not in the
    throughput: it is recovery work, not the database's size."""
    sql = """SELECT count(*) FROM runs WHERE workflow NOT IN ('seq', 'seq-async')
             AND (status IN ('running', 'pending') OR (status = 'waiting' AND wake_at < now()))
             AND lease_owner IS DISTINCT FROM 'scale-appender'"""
    t0 = time.perf_counter()
    first = last = int(await pool.fetchval(sql))
    since = time.perf_counter()
    while last and time.perf_counter() - t0 < limit_s and time.perf_counter() - since < 20:
        await asyncio.sleep(1)
        n = int(await pool.fetchval(sql))
        if n != last:
            last, since = n, time.perf_counter()
    return {"actionable_at_start": first, "left": last, "seconds": round(time.perf_counter() - t0, 1)}


async def throughput(pg: EmbeddedPostgres, redis: EmbeddedRedis, folder: Path, big_db: str, runs: int, steps: int,
                     rounds: int) -> dict[str, Any]:
    """engine_bench's concurrent workload through one worker: the big database, an empty one, and an empty one
    with a year of (empty) daily partitions of events, `rounds` times (the order reversed every other round);
    the steps/s of each and their ratios to the empty one."""
    wf = folder / "throughput-workflows"
    wf.mkdir(exist_ok=True)
    write_workflows(wf, steps)
    for db in ("scale_empty", "scale_parts"):
        drop_database(pg.url(), db)
        create_database(pg.url(), db)
        await migrate(pg.url(db))
    conn = await asyncpg.connect(pg.url("scale_parts"))
    try:  # the empty database with the big one's daily partitions of events: their number apart from the data
        made = await conn.fetchval(
            """SELECT count(*) FILTER (WHERE agentrt_history_partition('events', d))
               FROM generate_series(now() - interval '365 days', now(), interval '1 day') AS d""")
    finally:
        await conn.close()
    bench = BenchServers(folder, wf, pg, redis)
    out: dict[str, Any] = {"runs": runs, "steps": steps, "rounds": [], "partitions_made_in_scale_parts": made}
    variants = (("big", big_db), ("empty", "scale_empty"), ("parts", "scale_parts"))
    for r in range(rounds):
        got: dict[str, Any] = {}
        for label, db in variants[:: 1 if r % 2 == 0 else -1]:
            prefix = f"tp-{label}-{r}"
            url = pg.url(db)
            env = {**worker_env(bench, url, runs), "AGENTRT_REDIS_PREFIX": prefix}
            client = await RuntimeClient.connect(Settings(database_url=url, redis_url=redis.url(), workflows_dir=wf,
                                                          redis_prefix=prefix))
            worker = None
            try:
                before = await _live_counts(client.pool)
                with (folder / f"throughput-{label}-{r}.log").open("wb") as log:
                    worker = start_worker(env, log)
                    await wait_workflows(client, {"seq", "seq-async"}, 120)
                    res_settle = await _settle(client.pool)
                    await asyncio.sleep(1.0)
                    await concurrent(client, "seq-async", 100, steps)  # warm-up: the sandbox pool grows
                    pg_before = _tree_cpu(pg)
                    res: dict[str, Any] = dict(await concurrent(client, "seq-async", runs, steps))
                    # CPU is less moved by the machine's other load than steps/s: Postgres's per step
                    res["postgres_cpu_us_per_step"] = (_tree_cpu(pg) - pg_before) / (runs * steps) * 1e6
                res["live_runs_before"] = before
                res["settle"] = res_settle
                res["live_runs_after"] = await _live_counts(client.pool)
                got[label] = res
                print(f"  throughput {label} (round {r + 1}): {res['steps_per_s']:,.0f} steps/s, "
                      f"{res['failed']} failed", flush=True)
            finally:
                stop_worker(worker)
                await client.close()
        got["ratio_big_over_empty"] = got["big"]["steps_per_s"] / got["empty"]["steps_per_s"]
        got["ratio_parts_over_empty"] = got["parts"]["steps_per_s"] / got["empty"]["steps_per_s"]
        out["rounds"].append(got)
    for label, _ in variants:
        out[f"{label}_steps_per_s"] = statistics.median(x[label]["steps_per_s"] for x in out["rounds"])
    out["ratio"] = statistics.median(x["ratio_big_over_empty"] for x in out["rounds"])
    out["ratio_parts"] = statistics.median(x["ratio_parts_over_empty"] for x in out["rounds"])
    return out


def print_history(r: dict[str, Any]) -> None:
    """The partitioned-history part of the results table."""
    if "events_plans" in r:
        p = r["events_plans"]
        print(f"\none run's events over {p['partitions']} partitions of events: 'subquery' names the partition "
              "with history_at = (SELECT ...), 'param' (RUN_EVENTS, what the runtime sends) passes the run's "
              "history_at")
        for label, x in p.items():
            if not isinstance(x, dict):
                continue
            for name in STATEMENTS:
                for kind in ("custom", "generic"):
                    e = x[name][kind]
                    print(f"  {label:6} {name:8} {kind:7} plan: planning {e['planning_ms']} ms, execution "
                          f"{e['execution_ms']} ms, {e['partitions_in_plan']} partitions in the plan "
                          f"({e['never_executed']} never executed, {e['subplans_removed']} removed at start)")
                print(f"  {label:6} {name:8} timed p50/p99 ms: " + ", ".join(
                    f"{m} {x[name]['timed_' + m]['p50_ms']}/{x[name]['timed_' + m]['p99_ms']}"
                    for m in ("auto", "force_custom_plan", "force_generic_plan")))
    if "retention" in r:
        t = r["retention"]
        print(f"\nretention, one day at a time (target < 1 s): p50 {t['p50_s']} s")
        for d in t["days"]:
            print(f"  {d['partition']}: {d['seconds']} s, {d['runs_in_day']} runs ({d['runs_deleted']} deleted, "
                  f"{d['moved']} moved), {d['events_in_day']} events")
        for phase, a in t["appends"].items():
            print(f"  appends {phase:6} retention: {a['appends']} appends, p50 {a['p50_ms']} ms, "
                  f"p99 {a['p99_ms']} ms, max {a['max_ms']} ms")
        print(f"  appends fenced (not committed): {t['appends_fenced']}")
        o = t.get("parts", {})
        print(f"  fixed cost per call ({o.get('partitions')} partitions): ensure() {o.get('ensure_ms_p50')} ms, "
              f"list_partitions('events') {o.get('list_partitions_ms_p50')} ms (one statement instead: "
              f"{o.get('one_statement_list_ms_p50')} ms)")
    if "throughput" in r:
        t = r["throughput"]
        print(f"\nworker throughput, {t['runs']} concurrent {t['steps']}-step runs (target: big within 10 % of "
              f"empty): big {t['big_steps_per_s']:,.0f} steps/s, empty {t['empty_steps_per_s']:,.0f} steps/s, "
              f"ratio {t['ratio']:.3f}")
        if "parts_steps_per_s" in t:
            print(f"  an empty database with the same {t['partitions_made_in_scale_parts']} daily partitions of "
                  f"events: {t['parts_steps_per_s']:,.0f} steps/s, ratio to empty {t['ratio_parts']:.3f}")
        for k, rnd in enumerate(t["rounds"]):
            st = rnd["big"].get("settle", {})
            parts = f", empty+partitions {rnd['parts']['steps_per_s']:,.0f}" if "parts" in rnd else ""
            cpu = ", ".join(f"{v} {rnd[v]['postgres_cpu_us_per_step']:,.0f}" for v in ("big", "empty", "parts")
                            if "postgres_cpu_us_per_step" in rnd.get(v, {}))
            print(f"  round {k + 1}: big {rnd['big']['steps_per_s']:,.0f}, empty {rnd['empty']['steps_per_s']:,.0f}"
                  f"{parts} steps/s; Postgres CPU per step (us): {cpu}; before it, the big database's worker "
                  f"recovered {st.get('actionable_at_start')} orphaned live runs in {st.get('seconds')} s "
                  f"({st.get('left')} left)")
    for key in ("events_plans_error", "retention_error", "throughput_error"):
        if key in r:
            print(f"\n{key}: {r[key]}")
