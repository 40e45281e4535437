"""Engine benchmark: per-step overhead (sequential) and throughput (500 concurrent runs).

Starts its own durable Postgres (fsync on) and Redis from the wheels, one worker process, and drives
it through RuntimeClient. Prints a table and writes bench/results/engine.json.

    python bench/engine_bench.py [--sequential-runs 40] [--concurrent-runs 500] [--steps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, start_worker, stop_worker, wait_workflows  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

TASKS = '''
def noop():
    return None

async def anoop():
    return None
'''


def workflow(name: str, steps: int, function: str) -> str:
    body = "\n".join(f"  - {{id: s{i}, uses: python, with: {{function: \"bench_tasks:{function}\"}}}}"
                     for i in range(1, steps + 1))
    return f"name: {name}\nsteps:\n{body}\n"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


async def step_gaps(client: RuntimeClient, run_id: str) -> list[float]:
    """Seconds between consecutive step starts: commit of step i + decide + launch of step i+1."""
    detail = await client.get_run(run_id)
    starts = [e.ts.timestamp() for e in detail.events if e.type == "step.started"]
    return [b - a for a, b in itertools.pairwise(starts)]


async def run_gaps(client: RuntimeClient, name: str, runs: int) -> list[float]:
    """Per-step overheads of `runs` sequential runs of `name` (gaps between consecutive step starts)."""
    gaps: list[float] = []
    for _ in range(runs):
        run_id = await client.start_run(name)
        summary = await client.wait_for_run(run_id, timeout=60, poll=0.002)
        assert summary.status.value == "completed", summary.error
        gaps.extend(await step_gaps(client, run_id))
    return gaps


async def steps_per_s(client: RuntimeClient, name: str, runs: int, steps: int, *,
                      require_success: bool = False) -> float:
    """Start `runs` runs of `name` at once; steps/s from the first creation to the last finish (Postgres clocks)."""
    ids = await client.start_runs(name, [{} for _ in range(runs)])
    while True:
        left = await client.pool.fetchval(
            "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND status NOT IN ('completed', 'failed')",
            ids)
        if left == 0:
            break
        await asyncio.sleep(0.01)
    if require_success:
        failed = await client.pool.fetchval(
            "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND status = 'failed'", ids)
        assert failed == 0, f"{failed} runs failed"
    elapsed = await client.pool.fetchval(
        "SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM runs WHERE run_id = ANY($1::uuid[])",
        ids)
    return runs * steps / float(elapsed)


async def sequential(client: RuntimeClient, name: str, runs: int) -> dict[str, float]:
    gaps: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_id = await client.start_run(name)
        summary = await client.wait_for_run(run_id, timeout=60, poll=0.002)
        walls.append(time.perf_counter() - t0)
        assert summary.status.value == "completed", summary.error
        gaps.extend(await step_gaps(client, run_id))
    return {"step_overhead_p50_ms": pct(gaps, 50) * 1000, "step_overhead_p99_ms": pct(gaps, 99) * 1000,
            "run_wall_p50_ms": pct(walls, 50) * 1000, "samples": len(gaps)}


async def concurrent(client: RuntimeClient, name: str, runs: int, steps: int) -> dict[str, float]:
    t0 = time.perf_counter()
    ids = await client.start_runs(name, [{} for _ in range(runs)])
    created = time.perf_counter() - t0
    while True:  # wait for exactly these runs (earlier scenarios' runs are in the same database)
        done = await client.pool.fetchval(
            "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND status IN ('completed', 'failed')", ids)
        if done >= runs:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    last = await client.pool.fetchval(
        "SELECT max(finished_at) - min(created_at) FROM runs WHERE run_id = ANY($1::uuid[])", ids)
    db_elapsed = last.total_seconds()
    failed = await client.pool.fetchval(
        "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND status = 'failed'", ids)
    return {"runs": runs, "steps_per_s": runs * steps / db_elapsed, "elapsed_s": db_elapsed,
            "wall_s": elapsed, "create_s": created, "failed": failed}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    async with bench_servers("bench") as srv:
        wf_dir = srv.workflows
        (wf_dir / "bench_tasks.py").write_text(TASKS)
        (wf_dir / "seq.yaml").write_text(workflow("seq", args.steps, "noop"))
        (wf_dir / "seq-async.yaml").write_text(workflow("seq-async", args.steps, "anoop"))
        url = srv.db_url("bench")
        env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
               "AGENTRT_WORKFLOWS_DIR": str(wf_dir), "AGENTRT_CONCURRENCY": str(max(600, args.concurrent_runs)),
               "AGENTRT_LOG_LEVEL": "WARNING", "AGENTRT_DB_POOL_SIZE": "8"}
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        worker: subprocess.Popen[bytes] | None = None
        with (srv.tmp / "worker.log").open("wb") as log:
            try:
                worker = start_worker(env, log, prof)
                client = await RuntimeClient.connect(Settings(database_url=url, redis_url=srv.redis.url(),
                                                              workflows_dir=wf_dir))
                try:
                    await wait_workflows(client, {"seq", "seq-async"})
                    await sequential(client, "seq", 3)  # warm-up
                    return {
                        "sequential_sync_python": await sequential(client, "seq", args.sequential_runs),
                        "sequential_async_python": await sequential(client, "seq-async", args.sequential_runs),
                        "concurrent": await concurrent(client, "seq-async", args.concurrent_runs, args.steps),
                    }
                finally:
                    await client.close()
            finally:
                stop_worker(worker)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequential-runs", type=int, default=40)
    p.add_argument("--concurrent-runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    seq, seqa, conc = (results["sequential_sync_python"], results["sequential_async_python"],
                       results["concurrent"])
    print(f"\nAgentRuntime engine benchmark ({os.cpu_count()} cores; Postgres fsync on, Redis, one worker)")
    print(f"{'figure':58} {'value':>12}")
    for label, value in [
        (f"per-step overhead p50, sequential {args.steps}-step, sync python no-op (ms)", seq["step_overhead_p50_ms"]),
        ("per-step overhead p99, sync python no-op (ms)", seq["step_overhead_p99_ms"]),
        ("per-step overhead p50, async python no-op (ms)", seqa["step_overhead_p50_ms"]),
        ("per-step overhead p99, async python no-op (ms)", seqa["step_overhead_p99_ms"]),
        (f"whole {args.steps}-step run incl. start + polling, p50 (ms)", seq["run_wall_p50_ms"]),
        (f"throughput, {conc['runs']} concurrent {args.steps}-step runs (steps/s)", conc["steps_per_s"]),
        ("  time from first create to last finish (s)", conc["elapsed_s"]),
        ("  failed runs", conc["failed"]),
    ]:
        print(f"{label:58} {value:>12.2f}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "engine.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
