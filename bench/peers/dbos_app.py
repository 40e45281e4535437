"""The DBOS side of `bench/peers.py`: a workflow of 10 no-op steps, measured inside its own process.

Runs in the DBOS peer venv: `python dbos_app.py --db-url URL --sequential-runs N --concurrent-runs M`.
DBOS is a library, so its "client" is the application process itself: every figure is taken around
`DBOS.start_workflow_async(...)` + `handle.get_result()` in this process, and printed as one JSON line
on stdout for the driver. DBOS runs with its defaults (system database in the Postgres the driver
started, its default pool, each step's output committed before the next step starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from dbos import DBOS, DBOSConfig


@DBOS.step()
async def noop() -> None:
    return None


@DBOS.workflow()
async def ten_steps(steps: int) -> int:
    """`steps` durable no-op steps in sequence; returns how many ran."""
    for _ in range(steps):
        await noop()
    return steps


async def one_run(steps: int) -> None:
    handle = await DBOS.start_workflow_async(ten_steps, steps)
    assert await handle.get_result() == steps


async def measure(args: argparse.Namespace) -> dict[str, object]:
    for _ in range(args.warmup):
        await one_run(args.steps)
    await asyncio.gather(*(one_run(args.steps) for _ in range(args.warmup_concurrent)))
    walls: list[float] = []
    for _ in range(args.sequential_runs):
        t0 = time.perf_counter()
        await one_run(args.steps)
        walls.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(DBOS.start_workflow_async(ten_steps, args.steps)
                                     for _ in range(args.concurrent_runs)))
    results = await asyncio.gather(*(h.get_result() for h in handles))
    concurrent_s = time.perf_counter() - t0
    assert all(r == args.steps for r in results)
    return {"walls_s": walls, "concurrent_s": concurrent_s, "concurrent_runs": args.concurrent_runs,
            "steps": args.steps}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db-url", required=True)
    p.add_argument("--sequential-runs", type=int, default=40)
    p.add_argument("--concurrent-runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="sequential runs before measuring")
    p.add_argument("--warmup-concurrent", type=int, default=100, help="then this many concurrent runs")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config: DBOSConfig = {"name": "agentrt-peer-bench", "system_database_url": args.db_url,
                          "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    try:
        out = asyncio.run(measure(args))
    finally:
        DBOS.destroy()
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
