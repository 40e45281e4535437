"""Reliability benchmark: the long versions of tests/reliability, printing a table of figures.

Every section starts its own Postgres and Redis from the wheels (so it can kill and restart them),
an idempotency-checking HTTP sink and worker processes, then breaks something on purpose:

  crashes   kill -9 of a random worker, `--kills` times, under 50 concurrent 10-step runs on 3 workers
  zombies   SIGSTOP a worker holding runs past its lease, let another take over, SIGCONT
  redis     kill -9 without and with AOF, restart from an older RDB snapshot, a `--redis-outage` s outage
  postgres  restarts every 5-20 s with 0-5 s downtime under load
  poison    steps that always fail / always time out
  badfiles  hot-reload of the malformed-file corpus (+ a 50 MB file) into a running worker
  soak      `--soak-rate` runs/s for `--soak-minutes` with a kill every `--soak-kill-every` s

    python bench/reliability.py [--only crashes,soak] [--kills 200] [--soak-minutes 4] [--seed 1]

Writes bench/results/reliability.json. The defaults take about 13 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import chaos  # noqa: E402

SECTIONS = ("crashes", "zombies", "redis", "postgres", "poison", "badfiles", "soak")


async def section(name: str, body: Callable[[chaos.ChaosStack], Awaitable[dict[str, Any]]],
                  **stack_args: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    try:
        async with chaos.chaos_stack(**stack_args) as stack:
            figures = await body(stack)
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others' figures
        traceback.print_exc()
        figures = {"error": f"{type(exc).__name__}: {exc}"}
    figures["section_wall_s"] = time.monotonic() - t0
    print(f"[{time.strftime('%H:%M:%S')}] {name} done in {figures['section_wall_s']:.0f}s", flush=True)
    return figures


PRODUCTION_LEASES = {"AGENTRT_LEASE_TTL": "15", "AGENTRT_HEARTBEAT_INTERVAL": "2", "AGENTRT_RECONCILE_INTERVAL": "2",
                     "AGENTRT_REDELIVER_AFTER": "30"}


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    out: dict[str, dict[str, Any]] = {}
    if "crashes" in only:
        def crashes(s: chaos.ChaosStack) -> Any:
            if args.production_leases:  # the defaults of `agentrt worker`, not the short test timings
                s.extra_env.update(PRODUCTION_LEASES)
            return chaos.worker_crashes(s, kills=args.kills, workers=3, concurrency=50, steps=10, step_delay=0.3,
                                        kill_gap=args.kill_gap, seed=args.seed, drain_timeout=300)

        out["crashes"] = await section("crashes", crashes)
    if "zombies" in only:
        out["zombies"] = await section("zombies", lambda s: chaos.zombies(s, rounds=args.zombie_rounds,
                                                                           runs_per_round=5))
    if "redis" in only:
        out["redis kill -9, no persistence"] = await section(
            "redis kill -9 (no AOF)", lambda s: chaos.redis_fault(s, "kill9", runs=20))
        out["redis kill -9, AOF"] = await section(
            "redis kill -9 (AOF)", lambda s: chaos.redis_fault(s, "kill9", runs=20), redis_appendonly=True)
        out["redis restart from older RDB"] = await section(
            "redis older snapshot", lambda s: chaos.redis_fault(s, "old-snapshot", runs=20), redis_save=True)
        out[f"redis {args.redis_outage:g}s outage (AOF)"] = await section(
            "redis outage", lambda s: chaos.redis_fault(s, "outage", outage=args.redis_outage, runs=20),
            redis_appendonly=True)
    if "postgres" in only:
        out["postgres restarts"] = await section("postgres restarts", lambda s: chaos.postgres_restarts(
            s, restarts=args.pg_restarts, interval=(5, 20), downtime=(0, 5), concurrency=20, seed=args.seed))
    if "poison" in only:
        out["poison"] = await section("poison", lambda s: chaos.poison(s, runs=5, attempts=3, idle=5.0))
    if "badfiles" in only:
        async def bad(stack: chaos.ChaosStack) -> dict[str, Any]:
            f = await chaos.bad_files(stack, big_mb=50, timeout=120)
            reported = f.pop("reported")
            f.pop("log")
            files = f.pop("files")
            f.pop("workflows_with_runs")
            f["bad_files"] = len(files)
            f["reported_invalid"] = sum(1 for i in reported.values() if i is not None and i.status == "invalid")
            f["reported_with_line"] = sum(1 for i in reported.values() if i is not None and i.error_line)
            return f
        out["bad files"] = await section("bad files", bad)
    if "soak" in only:
        out["soak"] = await section("soak", lambda s: chaos.soak(
            s, rate=args.soak_rate, minutes=args.soak_minutes, kill_every=args.soak_kill_every, seed=args.seed))
    return out


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--production-leases", action="store_true",
                   help="crashes: workers with the production lease settings (TTL 15 s, heartbeat 2 s, reconcile 2 s)")
    p.add_argument("--kill-gap", type=lambda v: tuple(float(x) for x in v.split(",")), default=(0.4, 1.4),
                   metavar="MIN,MAX", help="crashes: seconds between two kills (default 0.4,1.4)")
    p.add_argument("--zombie-rounds", type=int, default=5)
    p.add_argument("--redis-outage", type=float, default=30.0)
    p.add_argument("--pg-restarts", type=int, default=8)
    p.add_argument("--soak-rate", type=float, default=5.0)
    p.add_argument("--soak-minutes", type=float, default=4.0)
    p.add_argument("--soak-kill-every", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(main_async(args))
    leases = "crashes with production leases (TTL 15 s)" if args.production_leases else "lease TTL 3 s"
    title = f"AgentRuntime reliability ({os.cpu_count()} cores; own Postgres + Redis per section; {leases})"
    print(f"\n{title}")
    print(f"{'section':34} {'figure':40} {'value':>12}")
    for name, figures in results.items():
        for key, value in figures.items():
            print(f"{name:34} {key:40} {fmt(value):>12}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
