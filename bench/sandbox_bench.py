"""Sandbox overhead: a no-op `python` step in a sandbox process (`process`) vs in the worker (`inline`).

Starts its own durable Postgres (fsync on) and Redis (bench/stack.py), then, in alternating rounds
(the mode that goes first alternates too, to even out drift), one worker process per mode with the
default telemetry (span store on): sequential 10-step runs (per-step overhead p50/p99: the gap
between consecutive `step.started` events) and 500 concurrent 10-step runs (steps/s). Figures are
medians over the rounds; the ratios compare the modes measured in the same invocation.

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


async def one_mode(srv: BenchServers, mode: str, args: argparse.Namespace) -> dict[str, float]:
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
            try:
                await wait_workflows(client, {"seq"}, seconds=30)
                await run_gaps(client, "seq", 3)  # warm-up: imports, prepared statements, the warm sandboxes
                # warm-up 2: the pool grows to what the load needs
                await steps_per_s(client, "seq", 100, args.steps, require_success=True)
                gaps = await run_gaps(client, "seq", args.sequential_runs)
                throughput = await steps_per_s(client, "seq", args.concurrent_runs, args.steps, require_success=True)
            finally:
                await client.close()
        finally:
            stop_worker(worker)
    return {"p50_ms": pct(gaps, 50) * 1000, "p99_ms": pct(gaps, 99) * 1000, "steps_per_s": throughput,
            "samples": len(gaps)}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    rounds: list[dict[str, dict[str, float]]] = []
    async with bench_servers("sandbox-bench") as srv:
        (srv.workflows / "bench_tasks.py").write_text(TASKS)
        (srv.workflows / "seq.yaml").write_text(workflow("seq", args.steps, "noop"))
        for i in range(args.rounds):
            order = MODES if i % 2 == 0 else MODES[::-1]
            figures = {mode: await one_mode(srv, mode, args) for mode in order}
            rounds.append(figures)
            print(f"round {i + 1}: " + "; ".join(
                f"{m} p50 {f['p50_ms']:.3f} ms p99 {f['p99_ms']:.3f} ms {f['steps_per_s']:.0f} steps/s"
                for m, f in figures.items()), flush=True)
    medians = {mode: {key: statistics.median(r[mode][key] for r in rounds) for key in ("p50_ms", "p99_ms",
                                                                                         "steps_per_s")}
               for mode in MODES}
    inline, process = medians["inline"], medians["process"]
    return {"rounds": rounds, "medians": medians,
            "p50_cost_ms": process["p50_ms"] - inline["p50_ms"],
            "p99_cost_ms": process["p99_ms"] - inline["p99_ms"],
            "throughput_ratio": process["steps_per_s"] / inline["steps_per_s"],
            "args": vars(args), "cores": os.cpu_count(), "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential-runs", type=int, default=40)
    p.add_argument("--concurrent-runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    medians: dict[str, dict[str, float]] = results["medians"]  # type: ignore[assignment]
    print(f"\nSandbox overhead ({os.cpu_count()} cores; Postgres fsync on, Redis, one worker, span store on; "
          f"medians of {args.rounds} rounds)")
    print(f"{'figure':52} {'inline':>10} {'process':>10}")
    for label, key in [("per-step overhead p50, sync python no-op (ms)", "p50_ms"),
                       ("per-step overhead p99 (ms)", "p99_ms"),
                       (f"{args.concurrent_runs} concurrent {args.steps}-step runs (steps/s)", "steps_per_s")]:
        print(f"{label:52} {medians['inline'][key]:>10.3f} {medians['process'][key]:>10.3f}")
    print(f"isolation cost: p50 {results['p50_cost_ms']:+.3f} ms/step (target <= 0.3), throughput "
          f"{results['throughput_ratio']:.1%} of inline (target >= 80%)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "sandbox.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
