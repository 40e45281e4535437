"""Fleet-wide limits under load: three `agentrt worker` processes, agent runs against an LLM peer that enforces its
own request and token rates (and answers 429 with the real headers when they are exceeded).

Each round:

- **with `limit:`**: `--runs` agent runs (two LLM turns each) whose steps opt in to a limit set to exactly what the
  peer allows (`--rate` requests/s, `--tokens` tokens/s): how many completed, the share of LLM calls that got a
  429, the achieved rate (accepted calls per second, first to last) against the limit, and how long;
- **without**: the same load with no limit: the peer's 429s and how long the runs took, retrying blindly
  (honouring Retry-After);
- **overhead**: `--sequential` one-step `llm` runs, alternating between a workflow with `limit:` (a limit far
  above the load, so capacity is always free) and the same workflow without it; the step's duration (its
  `step.started` to `step.completed`, from the event log) p50 of each, and the difference.

Starts its own durable Postgres (fsync on) and Redis (bench/stack.py); the peer runs in this process.

    python bench/limits_bench.py [--rounds 3] [--runs 300] [--rate 40] [--tokens 4000] [--sequential 200]

Prints a table and writes bench/results/limits.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, start_worker, stop_worker, wait_workflows  # noqa: E402

from tests.limits.support import load_workflows, run_load, sized_answer, write_limits  # noqa: E402
from tests.support.llm_peer import LlmPeer  # noqa: E402
from worker import runlog as ev  # noqa: E402
from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

WORKERS = 3


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def overhead_workflows(workflows: Path, peer_url: str) -> None:
    for name, opt_in in (("one-limited", "    limit: roomy\n"), ("one-free", "")):
        (workflows / f"{name}.yaml").write_text(
            f"name: {name}\nsteps:\n  - id: ask\n    uses: llm\n{opt_in}"
            f"    with: {{model: peer-model, base_url: \"{peer_url}\", prompt: hello, max_tokens: 20}}\n")


async def step_ms(client: RuntimeClient, run_id: str) -> float:
    detail = await client.get_run(run_id)
    started = [e.ts for e in detail.events if e.type == ev.STEP_STARTED]
    done = [e.ts for e in detail.events if e.type == ev.STEP_COMPLETED]
    return (done[-1] - started[0]).total_seconds() * 1000


async def overhead(client: RuntimeClient, n: int) -> dict[str, float]:
    limited: list[float] = []
    free: list[float] = []
    pair = [("one-limited", limited), ("one-free", free)]
    for i in range(n):
        for name, into in pair if i % 2 else pair[::-1]:  # alternating which goes first
            run = await client.start_run(name)
            summary = await client.wait_for_run(run, timeout=30, poll=0.005)
            if summary.status.value != "completed":
                raise RuntimeError(f"{name} run {run} {summary.status.value}: {summary.error}")
            into.append(await step_ms(client, run))
    return {"limited_p50_ms": pct(limited, 50), "free_p50_ms": pct(free, 50),
            "overhead_p50_ms": pct(limited, 50) - pct(free, 50), "limited_p99_ms": pct(limited, 99),
            "free_p99_ms": pct(free, 99)}


async def a_round(client: RuntimeClient, peer: LlmPeer, args: argparse.Namespace, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase, names in (("limited", ("ask-limited", "triage-limited")), ("unlimited", ("ask-free", "triage-free"))):
        peer.limit(requests=args.rate, tokens=args.tokens, per=1.0)  # a fresh (full) provider bucket
        await asyncio.sleep(1.5)  # and ours refills
        f = await run_load(client, peer, names, llm_runs=0, agent_runs=args.runs, timeout=600)
        out[phase] = {"runs": f.runs, "completed": f.completed, "calls": f.calls, "rejected_429": f.rejected,
                      "rejected_share": f.rejected_share, "achieved_per_s": f.achieved_rate,
                      "achieved_share_of_limit": f.achieved_rate / args.rate, "seconds": f.seconds}
        print(f"round {i + 1} {phase:9}: {f.completed}/{f.runs} runs, {f.calls} calls, {f.rejected} 429s "
              f"({100 * f.rejected_share:.2f} %), {f.achieved_rate:.1f} calls/s "
              f"({100 * f.achieved_rate / args.rate:.0f} % of {args.rate:g}/s), {f.seconds:.1f} s", flush=True)
    peer.limit()  # no provider limit: the overhead runs must never wait on the peer
    out["overhead"] = await overhead(client, args.sequential)
    o = out["overhead"]
    print(f"round {i + 1} overhead : step p50 {o['limited_p50_ms']:.3f} ms with limit:, {o['free_p50_ms']:.3f} ms "
          f"without: {1000 * o['overhead_p50_ms']:+.0f} µs", flush=True)
    report = await client.limits()
    out["mode"] = report.mode
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with LlmPeer() as peer:
        peer.responder = sized_answer
        async with bench_servers("limits-bench") as srv:
            write_limits(srv.workflows, f"""
                limits:
                  peer: {{requests: {args.rate:g}/s, tokens: {args.tokens:g}/s}}
                  roomy: {{requests: 100000/s, tokens: 100000000/s}}
                """)
            load_workflows(srv.workflows, peer.openai_url, limit="peer", suffix="-limited")
            load_workflows(srv.workflows, peer.openai_url, limit=None, suffix="-free")
            overhead_workflows(srv.workflows, peer.openai_url)
            url = srv.db_url("bench")
            settings = Settings(database_url=url, redis_url=srv.redis.url(), workflows_dir=srv.workflows)
            env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
                   "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING",
                   "AGENTRT_HTTP_ALLOWED_HOSTS": "127.0.0.1"}
            workers = []
            with (srv.tmp / "workers.log").open("ab") as log:
                workers = [start_worker({**env, "AGENTRT_WORKER_ID": f"bench-w{i}"}, log) for i in range(WORKERS)]
            try:
                client = await RuntimeClient.connect(settings)
                try:
                    await wait_workflows(client, {"ask-limited", "triage-limited", "one-limited", "one-free"}, 30)
                    for _ in range(100):
                        if len((await client.limits()).workers) == WORKERS:
                            break
                        await asyncio.sleep(0.1)
                    for i in range(args.rounds):
                        rounds.append(await a_round(client, peer, args, i))
                finally:
                    await client.close()
            finally:
                for worker in workers:
                    stop_worker(worker)

    def median(path: tuple[str, str]) -> float:
        return statistics.median(float(r[path[0]][path[1]]) for r in rounds)

    keys = [(phase, k) for phase in ("limited", "unlimited", "overhead") for k in rounds[0][phase]]
    return {"rounds": rounds, "medians": {f"{p}.{k}": median((p, k)) for p, k in keys}, "args": vars(args),
            "cores": os.cpu_count(), "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=300, help="agent runs per load (two LLM calls each)")
    p.add_argument("--rate", type=float, default=40.0, help="requests/s the peer allows (and the limit)")
    p.add_argument("--tokens", type=float, default=4000.0, help="tokens/s the peer allows (and the limit)")
    p.add_argument("--sequential", type=int, default=200, help="runs of each overhead workflow per round")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    m: dict[str, float] = results["medians"]
    print(f"\nfleet-wide limits ({os.cpu_count()} cores; {WORKERS} worker processes, Postgres fsync on, the peer and "
          f"the driver in one more process; medians of {args.rounds} rounds of {args.runs} agent runs)")
    print(f"with limit: ({args.rate:g}/s, {args.tokens:g} tok/s): {m['limited.completed']:.0f}/{args.runs} completed, "
          f"{m['limited.rejected_429']:.0f} 429s ({100 * m['limited.rejected_share']:.2f} % of calls), "
          f"{m['limited.achieved_per_s']:.1f} calls/s ({100 * m['limited.achieved_share_of_limit']:.0f} % of the "
          f"limit), {m['limited.seconds']:.1f} s")
    print(f"without:    {m['unlimited.completed']:.0f}/{args.runs} completed, {m['unlimited.rejected_429']:.0f} 429s "
          f"({100 * m['unlimited.rejected_share']:.1f} % of calls), {m['unlimited.seconds']:.1f} s")
    print(f"overhead:   llm step p50 {m['overhead.limited_p50_ms']:.3f} ms with limit:, "
          f"{m['overhead.free_p50_ms']:.3f} ms without: {1000 * m['overhead.overhead_p50_ms']:+.0f} µs "
          "(target < 300 µs)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "limits.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
