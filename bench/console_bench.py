"""Console benchmark: first paint over 100,000 runs, live latency, a 2,000-span waterfall, memory.

Starts its own Postgres and Redis from the wheels (like engine_bench.py), a worker process for the
live figures, and runs the console headless (`app.run_test()`) in this process. Prints figures
(they are measurements, not pass/fail tests) and writes bench/results/console.json.

    python bench/console_bench.py [--runs 100000] [--live-runs 50] [--live-seconds 180]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import (  # noqa: E402
    NAP_TASKS,
    bench_servers,
    nap_workflow,
    slope_per_min,
    start_worker,
    stop_worker,
    wait_workflows,
)
from textual.widgets import DataTable  # noqa: E402

from console.app import AgentConsole, tune_gc  # noqa: E402
from console.screens.run_detail import RunDetailScreen  # noqa: E402
from console.screens.runs import RunsScreen  # noqa: E402
from console.widgets.nav_table import NavTable  # noqa: E402
from console.widgets.span_waterfall import SpanWaterfall  # noqa: E402
from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.store.spans import insert_spans  # noqa: E402

SIZE = (160, 48)


def rss_mb() -> float:
    """This process's resident set size (the console runs in it), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


async def wait_until(pilot: Any, check: Any, within: float = 30.0, step: float = 0.005) -> None:
    deadline = time.perf_counter() + within
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("the console did not get there in time")
        await pilot.pause(step)


# -- (a) first paint over 100k runs ------------------------------------------------------------------
async def seed_runs(client: RuntimeClient, n: int) -> None:
    await client.pool.execute(
        """INSERT INTO definitions (def_hash, name, spec, source) VALUES ('bench', 'bench', '{"steps": []}', '')
           ON CONFLICT DO NOTHING""")
    await client.pool.execute(
        """INSERT INTO runs (run_id, workflow, def_hash, status, created_at, updated_at, finished_at, current_step,
                             error)
           SELECT gen_random_uuid(), 'wf-' || (i % 20), 'bench',
                  (ARRAY['completed','completed','completed','failed','cancelled','completed'])[1 + i % 6],
                  now() - make_interval(secs => i), now() - make_interval(secs => i),
                  now() - make_interval(secs => i) + interval '2 seconds', 's' || (i % 10),
                  CASE WHEN i % 6 = 3 THEN 'step s3: HTTP 503 from api.example' END
           FROM generate_series(1, $1) AS i""", n)
    await client.pool.execute("ANALYZE runs")


async def first_paint(client: RuntimeClient) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, call in [("count_runs_ms", lambda: client.count_runs()),
                       ("list_runs_500_ms", lambda: client.list_runs(limit=500)),
                       ("list_runs_search_ms", lambda: client.list_runs(limit=500, search="503"))]:
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(samples)
    paints = []
    for _ in range(3):
        t0 = time.perf_counter()
        app = AgentConsole(client, refresh_interval=3600)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda app=app: isinstance(app.screen, RunsScreen) and app.screen.loaded)
            await pilot.pause()  # the frame with the rows
            paints.append((time.perf_counter() - t0) * 1000)
            rows = app.screen.query_one("#runs-table", DataTable).row_count
    out["first_paint_ms_median"] = statistics.median(paints)
    out["first_paint_ms_max"] = max(paints)
    out["rows_shown"] = rows
    return out


# -- (c) a waterfall of 2,000 spans ------------------------------------------------------------------
async def waterfall(client: RuntimeClient, spans: int) -> dict[str, float]:
    run_id = str(await client.pool.fetchval("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1"))
    t = datetime.now(UTC).timestamp() - 3600
    rows: list[tuple[str, dict[str, Any]]] = []
    for i in range(spans):
        step = i // 10
        parent = None if i % 10 == 0 else f"{step * 10:016x}"
        rows.append((run_id, {"span_id": f"{i:016x}", "trace_id": "0" * 32, "parent_id": parent,
                              "name": f"step s{step}" if parent is None else f"s{step} attempt {i % 10}",
                              "kind": "internal", "start": t + step + (i % 10) * 0.05,
                              "end": t + step + (i % 10) * 0.05 + (1 if parent is None else 0.04),
                              "status": "error" if i % 7 == 0 else "ok", "status_message": None,
                              "attributes": {"agentrt.step.id": f"s{step}"}, "events": []}))
    await insert_spans(client.pool, rows)
    # painted = the chart's first line rendered with every span loaded (Textual draws lines lazily)
    painted: list[float] = []
    line_times: list[float] = []
    original = SpanWaterfall.render_line

    def hooked(chart: SpanWaterfall, y: int):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        strip = original(chart, y)
        line_times.append(time.perf_counter() - t)
        if len(chart.rows) == spans and not painted:
            painted.append(time.perf_counter())
        return strip

    SpanWaterfall.render_line = hooked  # type: ignore[method-assign, assignment]
    opens, loads, pages = [], [], []
    try:
        for _ in range(3):
            app = AgentConsole(client, refresh_interval=3600)
            async with app.run_test(size=SIZE) as pilot:
                await wait_until(pilot, lambda app=app: isinstance(app.screen, RunsScreen) and app.screen.loaded)
                painted.clear()
                t0 = time.perf_counter()
                app.open_run(run_id)
                await wait_until(pilot, lambda app=app: isinstance(app.screen, RunDetailScreen) and app.screen.loaded)
                loads.append((time.perf_counter() - t0) * 1000)
                detail = app.screen
                assert isinstance(detail, RunDetailScreen)
                detail.action_tab("waterfall")  # what `w` does
                await wait_until(pilot, lambda: bool(painted))
                opens.append((painted[0] - t0) * 1000)
                chart = app.screen.query_one("#span-chart", SpanWaterfall)
                for _ in range(20):  # page through: CPU spent drawing each page
                    line_times.clear()
                    await pilot.press("pagedown")
                    await pilot.pause()
                    pages.append(sum(line_times) * 1000)
                assert chart.cursor > 0
    finally:
        SpanWaterfall.render_line = original  # type: ignore[method-assign, assignment]
    return {"spans": spans, "open_ms_median": statistics.median(opens), "open_ms_max": max(opens),
            "detail_loaded_ms_median": statistics.median(loads),
            "page_render_ms_p50": pct(pages, 50), "page_render_ms_max": max(pages)}


# -- (b) live latency and (d) memory ------------------------------------------------------------------
async def live(client: RuntimeClient, runs: int, seconds: float) -> dict[str, Any]:
    seen: dict[str, tuple[str, str | None]] = {}
    observed: list[tuple[float, str, str, str | None, str]] = []  # (on screen, run, status, step, how)
    original = RunsScreen.render_runs

    def hooked(screen: RunsScreen) -> None:
        original(screen)
        now = time.time()
        for r in screen.runs:
            state = (r.status.value, r.current_step)
            if seen.get(r.run_id) != state:
                seen[r.run_id] = state
                observed.append((now, r.run_id, *state, "reload"))

    original_patch = RunsScreen._apply_patches

    def hooked_patch(screen: RunsScreen) -> None:
        queued = list(screen._patches)
        original_patch(screen)
        now = time.time()
        table = screen.query_one("#runs-table", NavTable)
        for run in screen.runs:
            if run.run_id in queued and table.shows(run.run_id):
                state = (run.status.value, run.current_step)
                if seen.get(run.run_id) != state:
                    seen[run.run_id] = state
                    observed.append((now, run.run_id, *state, "patch"))

    arrivals: dict[tuple[str, str, str | None], float] = {}  # first arrival of (run, status, step) in the feed
    commits: dict[tuple[str, str, str | None], float] = {}  # the worker's commit time of that change
    xadds: dict[tuple[str, str, str | None], float] = {}  # when Redis appended the event to the stream
    original_live = AgentConsole._live_event

    def hooked_live(app: AgentConsole, event: Any) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.run_id and data.get("status"):
            change = (event.run_id, str(data["status"]), data.get("current_step"))
            arrivals.setdefault(change, time.time())
            if isinstance(data.get("committed_at"), int | float):
                commits.setdefault(change, float(data["committed_at"]))
            if event.stream_id:  # "<ms>-<n>": when Redis appended it
                xadds.setdefault(change, int(event.stream_id.split("-")[0]) / 1000)
        original_live(app, event)

    AgentConsole._live_event = hooked_live  # type: ignore[method-assign, assignment]
    RunsScreen.render_runs = hooked  # type: ignore[method-assign, assignment]
    RunsScreen._apply_patches = hooked_patch  # type: ignore[method-assign, assignment]
    mem: list[tuple[float, float]] = []
    started: list[str] = []
    try:
        app = AgentConsole(client, refresh_interval=5.0)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda app=app: isinstance(app.screen, RunsScreen) and app.screen.loaded)
            t0 = time.perf_counter()
            next_sample = 0.0
            while time.perf_counter() - t0 < seconds:
                counts = await client.count_runs()
                active = counts.get("pending", 0) + counts.get("running", 0)
                if active < runs:
                    started += await client.start_runs("live", [{} for _ in range(runs - active)])
                if time.perf_counter() - t0 >= next_sample:
                    mem.append((time.perf_counter() - t0, rss_mb()))
                    next_sample += 10.0
                await pilot.pause(0.5)
    finally:
        RunsScreen.render_runs = original  # type: ignore[method-assign, assignment]
        AgentConsole._live_event = original_live  # type: ignore[method-assign, assignment]
        RunsScreen._apply_patches = original_patch  # type: ignore[method-assign, assignment]
    # commit times of the events behind each change the screen showed
    latencies: list[float] = []
    in_console: list[float] = []  # feed arrival -> on screen: the console's own share
    from_commit: list[float] = []  # the worker's commit -> on screen (the definition)
    mine = set(started)
    by_run: dict[str, list[tuple[float, str, str | None, str]]] = {}
    for when, run_id, status, step, how in observed:
        if run_id in mine:
            by_run.setdefault(run_id, []).append((when, status, step, how))
    to_redis: list[float] = []  # worker commit -> appended to the Redis stream
    redis_to_console: list[float] = []  # appended -> read by the console
    by_how: dict[str, list[float]] = {}  # commit -> on screen, by the path that showed it
    for run_id, changes in list(by_run.items())[:400]:
        detail = await client.get_run(run_id)
        for when, status, step, how in changes:
            if status == "completed":
                ev = next((e for e in detail.events if e.type == "run.completed"), None)
            elif step is not None:
                ev = next((e for e in detail.events if e.type == "step.started" and e.step_id == step), None)
            else:
                ev = None
            if ev is not None:
                latencies.append((when - ev.ts.timestamp()) * 1000)
            committed = commits.get((run_id, status, step))
            if committed is not None and when >= committed:
                from_commit.append((when - committed) * 1000)
                by_how.setdefault(how, []).append((when - committed) * 1000)
            xadd = xadds.get((run_id, status, step))
            if committed is not None and xadd is not None:
                to_redis.append((xadd - committed) * 1000)
            arrived = arrivals.get((run_id, status, step))
            if arrived is not None and xadd is not None:
                redis_to_console.append((arrived - xadd) * 1000)
            if arrived is not None and when >= arrived:
                in_console.append((when - arrived) * 1000)
    warm = [m for m in mem if m[0] >= 20] or mem
    slope = slope_per_min(warm) if len(warm) >= 2 else 0.0
    return {"runs_started": len(started), "samples": len(latencies), "latency_ms_p50": pct(latencies, 50),
            "latency_ms_p99": pct(latencies, 99), "latency_ms_max": max(latencies, default=float("nan")),
            "console_ms_p50": pct(in_console, 50), "console_ms_p99": pct(in_console, 99),
            "commit_ms_p50": pct(from_commit, 50), "commit_ms_p99": pct(from_commit, 99),
            "commit_samples": len(from_commit),
            "commit_to_redis_ms_p50": pct(to_redis, 50), "commit_to_redis_ms_p99": pct(to_redis, 99),
            "redis_to_console_ms_p50": pct(redis_to_console, 50),
            "redis_to_console_ms_p99": pct(redis_to_console, 99),
            "commit_ms_by_path": {how: {"samples": len(v), "p50": pct(v, 50), "p99": pct(v, 99)}
                                  for how, v in sorted(by_how.items())},
            "console_samples": len(in_console),
            "memory_mb": [round(m[1], 2) for m in mem], "memory_slope_mb_per_min": slope, "seconds": seconds}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tune_gc()  # as `agentrt console` does
    results: dict[str, Any] = {}
    async with bench_servers("console-bench", databases=("big", "live")) as srv:
        wf_dir, rd = srv.workflows, srv.redis
        (wf_dir / "bench_console.py").write_text(NAP_TASKS)
        (wf_dir / "live.yaml").write_text(nap_workflow("live", "bench_console"))
        big_url, live_url = srv.db_url("big"), srv.db_url("live")
        big = await RuntimeClient.connect(Settings(database_url=big_url, redis_url=rd.url(), workflows_dir=wf_dir,
                                                   redis_prefix=f"big-{uuid.uuid4().hex[:6]}"))
        try:
            t = time.perf_counter()
            await seed_runs(big, args.runs)
            results["seed_s"] = time.perf_counter() - t
            results["first_paint"] = await first_paint(big)
            results["waterfall"] = await waterfall(big, args.spans)
        finally:
            await big.close()
        env = {**os.environ, "AGENTRT_DATABASE_URL": live_url, "AGENTRT_REDIS_URL": rd.url(),
               "AGENTRT_WORKFLOWS_DIR": str(wf_dir), "AGENTRT_CONCURRENCY": "200", "AGENTRT_LOG_LEVEL": "WARNING"}
        worker: subprocess.Popen[bytes] | None = None
        with (srv.tmp / "worker.log").open("wb") as log:
            try:
                worker = start_worker(env, log)
                client = await RuntimeClient.connect(Settings(database_url=live_url, redis_url=rd.url(),
                                                              workflows_dir=wf_dir))
                try:
                    await wait_workflows(client, {"live"})
                    results["live"] = await live(client, args.live_runs, args.live_seconds)
                finally:
                    await client.close()
            finally:
                stop_worker(worker)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--spans", type=int, default=2000)
    p.add_argument("--live-runs", type=int, default=50)
    p.add_argument("--live-seconds", type=float, default=180)
    args = p.parse_args()
    r = asyncio.run(main_async(args))
    fp, wf, lv = r["first_paint"], r["waterfall"], r["live"]
    print(f"\nAgentRuntime console benchmark ({os.cpu_count()} cores; headless app.run_test at 160x48)")
    for label, value in [
        (f"(a) launch to first paint, {args.runs} runs in Postgres, median (ms)", fp["first_paint_ms_median"]),
        ("    max of 3 (ms)", fp["first_paint_ms_max"]),
        ("    count_runs() GROUP BY status, median (ms)", fp["count_runs_ms"]),
        ("    list_runs(limit=500), median (ms)", fp["list_runs_500_ms"]),
        ("    list_runs(limit=500, search='503'), median (ms)", fp["list_runs_search_ms"]),
        (f"(b) worker commit -> on screen, {args.live_runs} runs executing, p50 (ms)", lv["commit_ms_p50"]),
        ("    p99 (ms)", lv["commit_ms_p99"]),
        ("    samples", lv["commit_samples"]),
        ("    from the event's creation (before its commit), p50 (ms)", lv["latency_ms_p50"]),
        ("    from the event's creation, p99 (ms)", lv["latency_ms_p99"]),
        ("    of which worker commit -> in the Redis stream, p50 (ms)", lv["commit_to_redis_ms_p50"]),
        ("    of which worker commit -> in the Redis stream, p99 (ms)", lv["commit_to_redis_ms_p99"]),
        ("    of which Redis stream -> read by the console, p50 (ms)", lv["redis_to_console_ms_p50"]),
        ("    of which Redis stream -> read by the console, p99 (ms)", lv["redis_to_console_ms_p99"]),
        ("    of which feed arrival -> on screen (the console's share), p50 (ms)", lv["console_ms_p50"]),
        ("    of which feed arrival -> on screen, p99 (ms)", lv["console_ms_p99"]),
        (f"(c) open a run with {wf['spans']} spans to waterfall painted, median (ms)", wf["open_ms_median"]),
        ("    max of 3 (ms)", wf["open_ms_max"]),
        ("    of which get_run + spans loaded and rendered (ms)", wf["detail_loaded_ms_median"]),
        ("    page down: time drawing the page's lines, p50 (ms)", wf["page_render_ms_p50"]),
        ("    page down: max (ms)", wf["page_render_ms_max"]),
        (f"(d) RSS slope of the console process over {lv['seconds']:.0f}s of live updates (MB/min)",
         lv["memory_slope_mb_per_min"]),
    ]:
        print(f"{label:78} {value:>10.2f}")
    for how, fig in lv["commit_ms_by_path"].items():
        print(f"    commit -> on screen via {how}: {fig['samples']} samples, "
              f"p50 {fig['p50']:.1f} ms, p99 {fig['p99']:.1f} ms")
    print(f"    memory samples every 10s (MB): {lv['memory_mb']}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "console.json").write_text(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
