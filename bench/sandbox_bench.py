"""Sandbox overhead: a no-op `python` step in a sandbox process (`process`) vs in the worker (`inline`).

Starts its own durable Postgres (fsync on) and Redis (bench/stack.py), then, in alternating rounds
(the mode that goes first alternates too, to even out drift), one worker process per mode with the
default telemetry (span store on), for a sync no-op task function and an async one: sequential
10-step runs (per-step overhead p50/p99: the gap between consecutive `step.started` events) and 500
concurrent 10-step runs (steps/s), after a warm-up (a few runs, then 100 concurrent ones, so the
pool has grown to what the load needs). Figures are medians over the rounds; the ratios compare the
modes measured in the same invocation.

    python bench/sandbox_bench.py [--rounds 3] [--sequential-runs 40] [--concurrent-runs 500] [--steps 10]

Prints a table and writes bench/results/sandbox.json.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_bench import TASKS, pct, run_gaps, steps_per_s, workflow  # noqa: E402
from stack import BenchServers, bench_servers, start_worker, stop_worker, wait_workflows  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

MODES = ("inline", "process")
KINDS = {"sync": "seq", "async": "aseq"}  # the task function's kind -> the workflow that calls it
FIGURES = ("p50_ms", "p99_ms", "steps_per_s")


async def one_mode(srv: BenchServers, mode: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    url = srv.db_url("bench")
    env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
           "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_CONCURRENCY": str(max(600, args.concurrent_runs)),
           "AGENTRT_LOG_LEVEL": "WARNING", "AGENTRT_DB_POOL_SIZE": "8", "AGENTRT_PYTHON_ISOLATION": mode}
    profile = os.environ.get("BENCH_PROFILE")
    prof = ["-m", "cProfile", "-o", f"{profile}.{mode}"] if profile else []
    worker: subprocess.Popen[bytes] | None = None
    with (srv.tmp / f"worker-{mode}.log").open("ab") as log:
        try:
            worker = start_worker(env, log, prof)
            client = await RuntimeClient.connect(Settings(database_url=url, redis_url=srv.redis.url(),
                                                          workflows_dir=srv.workflows))
            figures: dict[str, dict[str, float]] = {}
            try:
                await wait_workflows(client, set(KINDS.values()), seconds=30)
                for kind, name in KINDS.items():
                    await run_gaps(client, name, 3)  # warm-up: imports, prepared statements, the warm sandboxes
                    # warm-up 2: the pool grows to what the load needs
                    await steps_per_s(client, name, 100, args.steps, require_success=True)
                    gaps = await run_gaps(client, name, args.sequential_runs)
                    throughput = await steps_per_s(client, name, args.concurrent_runs, args.steps,
                                                   require_success=True)
                    figures[kind] = {"p50_ms": pct(gaps, 50) * 1000, "p99_ms": pct(gaps, 99) * 1000,
                                     "steps_per_s": throughput, "samples": len(gaps)}
            finally:
                await client.close()
        finally:
            stop_worker(worker)
    return figures


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    async with bench_servers("sandbox-bench") as srv:
        (srv.workflows / "bench_tasks.py").write_text(TASKS)
        (srv.workflows / "seq.yaml").write_text(workflow("seq", args.steps, "noop"))
        (srv.workflows / "aseq.yaml").write_text(workflow("aseq", args.steps, "anoop"))
        for i in range(args.rounds):
            order = MODES if i % 2 == 0 else MODES[::-1]
            figures = {mode: await one_mode(srv, mode, args) for mode in order}
            rounds.append(figures)
            for kind in KINDS:
                print(f"round {i + 1}, {kind}: " + "; ".join(
                    f"{m} p50 {f[kind]['p50_ms']:.3f} ms p99 {f[kind]['p99_ms']:.3f} ms "
                    f"{f[kind]['steps_per_s']:.0f} steps/s" for m, f in figures.items()), flush=True)
    medians = {mode: {kind: {key: statistics.median(r[mode][kind][key] for r in rounds) for key in FIGURES}
                      for kind in KINDS} for mode in MODES}
    costs = {kind: {"p50_cost_ms": medians["process"][kind]["p50_ms"] - medians["inline"][kind]["p50_ms"],
                    "p99_cost_ms": medians["process"][kind]["p99_ms"] - medians["inline"][kind]["p99_ms"],
                    # per round, then the median: both modes of a round ran on the same machine state
                    "throughput_ratio": statistics.median(r["process"][kind]["steps_per_s"]
                                                          / r["inline"][kind]["steps_per_s"] for r in rounds)}
             for kind in KINDS}
    return {"rounds": rounds, "medians": medians, "costs": costs,
            "args": vars(args), "cores": os.cpu_count(), "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential-runs", type=int, default=40)
    p.add_argument("--concurrent-runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    medians: dict[str, dict[str, dict[str, float]]] = results["medians"]  # type: ignore[assignment]
    costs: dict[str, dict[str, float]] = results["costs"]  # type: ignore[assignment]
    print(f"\nSandbox overhead ({os.cpu_count()} cores; Postgres fsync on, Redis, one worker, span store on; "
          f"medians of {args.rounds} rounds)")
    print(f"{'figure':56} {'inline':>10} {'process':>10}")
    for kind in KINDS:
        for label, key in [(f"per-step overhead p50, {kind} python no-op (ms)", "p50_ms"),
                           (f"per-step overhead p99, {kind} (ms)", "p99_ms"),
                           (f"{args.concurrent_runs} concurrent {args.steps}-step runs, {kind} (steps/s)",
                            "steps_per_s")]:
            print(f"{label:56} {medians['inline'][kind][key]:>10.3f} {medians['process'][kind][key]:>10.3f}")
    for kind, cost in costs.items():
        print(f"isolation cost, {kind}: p50 {cost['p50_cost_ms']:+.3f} ms/step (target <= 0.3), throughput "
              f"{cost['throughput_ratio']:.1%} of inline (target >= 80%)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "sandbox.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
