"""Expression budget benchmark: hostile expressions fail fast, honest runs on the same worker keep their latency.

Starts its own Postgres and Redis, one worker process, and measures
- how long each hostile workflow (issue 15) takes from start to failure, and its error;
- an honest one-step run's latency (start -> completed, p50 of `--runs`) alone, and while hostile runs
  are kept in flight on the same worker (each scenario alone, medians over `--rounds` rounds). The
  "control" flood fails just as often but cheaply (`1 / 0`): what the hostile runs add beyond their
  run traffic is the difference between a hostile row and the control row.

    python bench/expression_budget_bench.py [--rounds 3] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, start_worker, stop_worker, wait_workflows  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

SORTED_LIST = "[" + ", ".join(["sorted('ab' * 4000000)"] * 140) + "]"
ROUND_TRIPS = "len(" + "split(join(" * 8 + "['a'] * 100000" + ", ','), ',')" * 8 + ")"
HOSTILE = {
    "sorted-list": SORTED_LIST,  # the 4 KB list of issue 15: refused by the item limit
    "round-trips": ROUND_TRIPS,  # within every size limit: stopped by the CPU budget
    "control": "1 / 0",  # fails at once: the cost of a failing run's traffic alone
}
HONEST = """name: honest
inputs: {n: {type: integer, default: 1}}
steps:
  - {id: only, uses: set, with: {n: "${{ inputs.n + 1 }}", label: "run ${{ run.id }}"}}
"""


def hostile(name: str, expr: str) -> str:
    return f'name: {name}\nsteps:\n  - {{id: greedy, uses: set, with: {{x: "${{{{ {expr} }}}}"}}}}\n'


async def honest_p50(client: RuntimeClient, runs: int) -> float:
    walls = []
    for i in range(runs):
        started = time.perf_counter()
        run_id = await client.start_run("honest", {"n": i})
        summary = await client.wait_for_run(run_id, timeout=60, poll=0.002)
        walls.append(time.perf_counter() - started)
        assert summary.status.value == "completed", summary.error
    return statistics.median(walls)


async def time_to_fail(client: RuntimeClient, name: str) -> tuple[float, str]:
    started = time.perf_counter()
    run_id = await client.start_run(name)
    summary = await client.wait_for_run(run_id, timeout=120, poll=0.002)
    assert summary.status.value == "failed", summary.status
    return time.perf_counter() - started, summary.error or ""


async def flood(client: RuntimeClient, name: str, in_flight: int) -> None:
    """Keep `in_flight` runs of `name` going until cancelled."""
    while True:
        ids = [await client.start_run(name) for _ in range(in_flight)]
        for run_id in ids:
            await client.wait_for_run(run_id, timeout=120, poll=0.01)


async def main_async(args: argparse.Namespace) -> None:
    async with bench_servers("exprbench") as srv:
        (srv.workflows / "honest.yaml").write_text(HONEST)
        for name, expr in HOSTILE.items():
            (srv.workflows / f"{name}.yaml").write_text(hostile(name, expr))
        url = srv.db_url("bench")
        env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
               "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING"}
        worker = None
        with (srv.tmp / "worker.log").open("wb") as log:
            try:
                worker = start_worker(env, log)
                client = await RuntimeClient.connect(Settings(database_url=url, redis_url=srv.redis.url(),
                                                              workflows_dir=srv.workflows))
                try:
                    await wait_workflows(client, {"honest", *HOSTILE})
                    await honest_p50(client, 5)  # warm-up
                    fails: dict[str, list[float]] = {name: [] for name in HOSTILE}
                    errors: dict[str, str] = {}
                    p50s: dict[str, list[float]] = {"alone": [], **{f"with {n} in flight": [] for n in HOSTILE}}
                    for _ in range(args.rounds):
                        for name in HOSTILE:
                            took, errors[name] = await time_to_fail(client, name)
                            fails[name].append(took)
                        p50s["alone"].append(await honest_p50(client, args.runs))
                        for name in HOSTILE:
                            task = asyncio.create_task(flood(client, name, args.in_flight))
                            await asyncio.sleep(0.2)
                            try:
                                p50s[f"with {name} in flight"].append(await honest_p50(client, args.runs))
                            finally:
                                task.cancel()
                                with contextlib.suppress(asyncio.CancelledError):
                                    await task
                finally:
                    await client.close()
            finally:
                stop_worker(worker)
    print(f"\nExpression budget benchmark ({os.cpu_count()} cores, one worker; medians of {args.rounds} rounds)")
    for name, values in fails.items():
        print(f"hostile '{name}': start -> failed {statistics.median(values) * 1000:8.1f} ms   {errors[name][:110]}")
    for label, values in p50s.items():
        print(f"honest one-step run p50, {label:28} {statistics.median(values) * 1000:8.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=20, help="honest runs per measurement")
    p.add_argument("--in-flight", type=int, default=4, help="hostile runs kept in flight")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
