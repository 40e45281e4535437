"""Engine benchmark: per-step overhead (sequential) and throughput (500 concurrent runs).

Starts its own durable Postgres (fsync on) and Redis from the wheels, one worker process, and drives
it through RuntimeClient. Prints a table and writes bench/results/engine.json.

    python bench/engine_bench.py [--sequential-runs 40] [--concurrent-runs 500] [--steps 10]
                                 [--rounds 3] [--telemetry on,off]

With several telemetry modes, every round starts one worker per mode (the order alternating) and the
table shows medians per mode and the median of the per-round throughput ratios. The worker's CPU per
step (from /proc, its own process and its sandbox children apart) is the figure least moved by
whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from stack import BenchServers, bench_servers, proc_stat, start_worker, stop_worker, wait_workflows  # noqa: E402

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
        summary = await client.wait_for_run(run_id, timeout=60)  # pushed: no polling
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


async def timed_runs(client: RuntimeClient, name: str, runs: int) -> tuple[list[float], list[str]]:
    """`runs` sequential runs of `name`: each one's seconds from `start_run` to the caller seeing it completed
    (pushed, no polling), and the run ids. Shared with bench/peers.py (its W1)."""
    walls: list[float] = []
    ids: list[str] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_id = await client.start_run(name)
        summary = await client.wait_for_run(run_id, timeout=60)  # pushed: no polling
        walls.append(time.perf_counter() - t0)
        assert summary.status.value == "completed", summary.error
        ids.append(run_id)
    return walls, ids


async def sequential(client: RuntimeClient, name: str, runs: int) -> dict[str, float]:
    walls, ids = await timed_runs(client, name, runs)
    gaps: list[float] = []
    for run_id in ids:  # read after the runs, so that reading the events is never inside a run's time
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


def cpu_seconds(pid: int) -> tuple[float, dict[int, float]]:
    """CPU seconds (user + system) of process `pid`, and of each of its children alive now (the sandbox pool)."""
    own = proc_stat(pid)[1]
    children: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != pid:
            try:
                ppid, cpu = proc_stat(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                children[int(d.name)] = cpu
    return own, children


async def measure(client: RuntimeClient, worker_pid: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    await sequential(client, "seq", 3)  # warm-up
    await concurrent(client, "seq-async", 100, args.steps)  # the sandbox pool grows
    out = {"sequential_sync_python": await sequential(client, "seq", args.sequential_runs),
           "sequential_async_python": await sequential(client, "seq-async", args.sequential_runs)}
    before = cpu_seconds(worker_pid)
    conc = await concurrent(client, "seq-async", args.concurrent_runs, args.steps)
    after = cpu_seconds(worker_pid)
    steps = args.concurrent_runs * args.steps
    conc["worker_cpu_us_per_step"] = (after[0] - before[0]) / steps * 1e6
    conc["sandbox_cpu_us_per_step"] = sum(c - before[1].get(p, 0.0) for p, c in after[1].items()) / steps * 1e6
    out["concurrent"] = conc
    return out


def write_workflows(wf_dir: Path, steps: int) -> None:
    """The benchmark's workflows: `seq` (sync python no-ops) and `seq-async` (async ones), `steps` steps each."""
    (wf_dir / "bench_tasks.py").write_text(TASKS)
    (wf_dir / "seq.yaml").write_text(workflow("seq", steps, "noop"))
    (wf_dir / "seq-async.yaml").write_text(workflow("seq-async", steps, "anoop"))


def worker_env(srv: BenchServers, url: str, concurrent_runs: int) -> dict[str, str]:
    """The benchmark worker's environment: one worker, concurrency >= 600, 8 Postgres connections."""
    return {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
            "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_CONCURRENCY": str(max(600, concurrent_runs)),
            "AGENTRT_LOG_LEVEL": "WARNING", "AGENTRT_DB_POOL_SIZE": "8"}


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every round starts one worker per telemetry mode (the order alternating) on the same database."""
    rounds: list[dict[str, object]] = []
    async with bench_servers("bench") as srv:
        wf_dir = srv.workflows
        write_workflows(wf_dir, args.steps)
        url = srv.db_url("bench")
        base = worker_env(srv, url, args.concurrent_runs)
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        client = await RuntimeClient.connect(Settings(database_url=url, redis_url=srv.redis.url(),
                                                      workflows_dir=wf_dir))
        try:
            for r in range(args.rounds):
                modes = args.telemetry if r % 2 == 0 else list(reversed(args.telemetry))
                result: dict[str, object] = {}
                for mode in modes:
                    worker: subprocess.Popen[bytes] | None = None
                    with (srv.tmp / f"worker-{r}-{mode}.log").open("wb") as log:
                        try:
                            worker = start_worker({**base, **args.variants[mode]}, log, prof)
                            await wait_workflows(client, {"seq", "seq-async"})
                            await asyncio.sleep(1.0)  # the worker's own start-up work settles
                            result[mode] = await measure(client, worker.pid, args)
                        finally:
                            stop_worker(worker)
                rounds.append(result)
                print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{m}: {result[m]['concurrent']['steps_per_s']:,.0f} steps/s, "  # type: ignore[index]
                    f"{result[m]['sequential_async_python']['step_overhead_p50_ms']:.3f} ms/step"  # type: ignore[index]
                    for m in modes), flush=True)
        finally:
            await client.close()
    return rounds


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequential-runs", type=int, default=40)
    p.add_argument("--concurrent-runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1, help="rounds; figures are medians over them (default 1)")
    p.add_argument("--telemetry", default="on",
                   help="comma-separated AGENTRT_TELEMETRY modes to compare in every round, e.g. on,off "
                        "(default: on)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL:ENV=VALUE[,ENV=VALUE]",
                   help="instead of --telemetry: compare workers started with these environments, e.g. "
                        "--variant a:AGENTRT_TELEMETRY=on --variant b:AGENTRT_TELEMETRY=on,PYTHONHASHSEED=0")
    args = p.parse_args()
    if args.variant:
        args.variants = {}
        for v in args.variant:
            label, _, assignments = v.partition(":")
            args.variants[label] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    else:
        args.variants = {m.strip(): {"AGENTRT_TELEMETRY": m.strip()} for m in args.telemetry.split(",") if m.strip()}
    args.telemetry = list(args.variants)
    rounds = asyncio.run(main_async(args))

    def fig(mode: str, part: str, key: str) -> float:
        return median([float(r[mode][part][key]) for r in rounds])  # type: ignore[index]

    load = os.getloadavg()
    print(f"\nAgentRuntime engine benchmark ({os.cpu_count()} cores; Postgres fsync on, Redis, one worker; "
          f"medians of {args.rounds} round(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    rows = [
        (f"per-step overhead p50, sequential {args.steps}-step, sync python no-op (ms)",
         "sequential_sync_python", "step_overhead_p50_ms"),
        ("per-step overhead p99, sync python no-op (ms)", "sequential_sync_python", "step_overhead_p99_ms"),
        ("per-step overhead p50, async python no-op (ms)", "sequential_async_python", "step_overhead_p50_ms"),
        ("per-step overhead p99, async python no-op (ms)", "sequential_async_python", "step_overhead_p99_ms"),
        (f"whole {args.steps}-step run, start to result seen, p50 (ms)", "sequential_async_python",
         "run_wall_p50_ms"),
        (f"throughput, {args.concurrent_runs} concurrent {args.steps}-step runs (steps/s)", "concurrent",
         "steps_per_s"),
        ("  worker process CPU per step (us)", "concurrent", "worker_cpu_us_per_step"),
        ("  sandbox processes CPU per step (us)", "concurrent", "sandbox_cpu_us_per_step"),
        ("  failed runs", "concurrent", "failed"),
    ]
    modes = args.telemetry
    width = max(16, *(len(m) + 2 for m in modes))
    print(f"{'figure':62}" + "".join(f"{m:>{width}}" for m in modes))
    for label, part, key in rows:
        print(f"{label:62}" + "".join(f"{fig(m, part, key):>{width}.3f}" for m in modes))
    if len(modes) >= 2:
        a, b = modes[0], modes[1]
        ratios = [float(r[a]["concurrent"]["steps_per_s"]) / float(r[b]["concurrent"]["steps_per_s"])  # type: ignore[index]
                  for r in rounds]
        print(f"throughput {a} / {b}, median of per-round ratios: {median(ratios):.3f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "engine.json").write_text(json.dumps({"args": vars(args), "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
