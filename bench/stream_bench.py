"""Live token streams (issue 19): what streaming `llm` steps through the runtime costs.

One `agentrt worker` process on durable Postgres (fsync on) and Redis; the OpenAI-wire peer
(`tests/support/llm_peer.py`) and the reader in this process. Each round:

- **time to first token**: `--ttft-runs` pairs, alternating which goes first: (a) directly from the peer: a
  streaming request from this process, the first piece's arrival against the moment the peer wrote it; (b)
  through the runtime: a one-step `llm` run whose live stream a reader here follows (`follow_live`, as
  `agentrt tail` does), the first `llm.delta`'s arrival against the moment the peer wrote that piece. The
  runtime's addition is (b) - (a) (parsing, coalescing, the publisher, Redis, the reader's XREAD). Also the
  time to first token the worker measured (request sent → first piece) against the direct client's.
- **Redis memory per streaming run**: MEMORY USAGE of the run streams of (a), of one long answer
  (`--long-tokens`, unpaced), and of a flood (an answer far beyond the stream's MAXLEN: the bound).
- **step overhead**: `--sequential` pairs of one-step `llm` runs with the same short answer from an unpaced
  peer, `stream: true` and `stream: false` alternating; each step's `step.started` → `step.completed` from
  the event log, p50, and the worker's CPU time per run in each mode (blocks of runs, /proc).

    python bench/stream_bench.py [--rounds 3] [--ttft-runs 100] [--sequential 100]

Prints a table and writes bench/results/stream.json.
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

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, cpu_seconds, start_worker, stop_worker, wait_workflows  # noqa: E402

from tests.support.llm_peer import LlmPeer, openai_text  # noqa: E402
from worker import runlog as ev  # noqa: E402
from worker.bus.streams import Keys  # noqa: E402
from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.streams.entries import LLM_DELTA  # noqa: E402

SHORT = " ".join(f"word{i}" for i in range(40))  # 40 pieces


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def write_workflows(workflows: Path, peer_url: str) -> None:
    for name, extra in (("streamed", ""), ("plain", ", stream: false")):
        (workflows / f"{name}.yaml").write_text(
            f"name: {name}\nsteps:\n  - id: ask\n    uses: llm\n"
            f"    with: {{model: m, base_url: \"{peer_url}\", prompt: hello{extra}}}\n")




async def direct_lag(peer: LlmPeer, http: httpx.AsyncClient) -> tuple[float, float]:
    """(first piece arrival - the peer's write of it, request sent → first piece), in ms."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True,
            "stream_options": {"include_usage": True}}
    sent = time.monotonic()
    arrived = None
    async with http.stream("POST", peer.openai_url + "/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if arrived is None and line.startswith("data: {") and json.loads(line[6:])["choices"] and \
                    json.loads(line[6:])["choices"][0]["delta"].get("content"):
                arrived = time.monotonic()
    assert arrived is not None
    return (arrived - peer.first_pieces[-1]) * 1000, (arrived - sent) * 1000


async def runtime_lag(client: RuntimeClient, peer: LlmPeer) -> tuple[float, float, str]:
    """(first llm.delta at the reader - the peer's write of that piece, the worker's own ttft_ms, run id)."""
    run_id = await client.start_run("streamed")
    arrived, ttft = None, 0.0
    async for entry in client.follow_live(run_id, block_ms=2000):
        if entry.type == LLM_DELTA and arrived is None:
            arrived, ttft = time.monotonic(), float(entry.data.get("ttft_ms") or 0.0)
    summary = await client.wait_for_run(run_id, timeout=30, poll=0.005)
    if summary.status.value != "completed" or arrived is None:
        raise RuntimeError(f"run {run_id} {summary.status.value}: {summary.error}")
    return (arrived - peer.first_pieces[-1]) * 1000, ttft, run_id


async def step_ms(client: RuntimeClient, run_id: str) -> float:
    detail = await client.get_run(run_id)
    started = [e.ts for e in detail.events if e.type == ev.STEP_STARTED]
    done = [e.ts for e in detail.events if e.type == ev.STEP_COMPLETED]
    return (done[-1] - started[0]).total_seconds() * 1000


async def overhead(client: RuntimeClient, pid: int, n: int) -> dict[str, float]:
    ms: dict[str, list[float]] = {"streamed": [], "plain": []}
    cpu: dict[str, float] = {"streamed": 0.0, "plain": 0.0}
    block = 10
    for i in range(0, n, block):
        for name in ("streamed", "plain") if (i // block) % 2 else ("plain", "streamed"):
            before = cpu_seconds(pid)
            for _ in range(block):
                run = await client.start_run(name)
                summary = await client.wait_for_run(run, timeout=30, poll=0.005)
                if summary.status.value != "completed":
                    raise RuntimeError(f"{name} run {run} {summary.status.value}: {summary.error}")
            cpu[name] += cpu_seconds(pid) - before
            # the durations from the event log, read after the block so that reading does not slow it
        for name in ("streamed", "plain"):
            runs = [r for r in await client.list_runs(workflow=name, limit=block)]
            ms[name] += [await step_ms(client, r.run_id) for r in runs]
    return {"streamed_p50_ms": pct(ms["streamed"], 50), "plain_p50_ms": pct(ms["plain"], 50),
            "overhead_p50_ms": pct(ms["streamed"], 50) - pct(ms["plain"], 50),
            "streamed_p99_ms": pct(ms["streamed"], 99), "plain_p99_ms": pct(ms["plain"], 99),
            "streamed_cpu_ms_per_run": 1000 * cpu["streamed"] / n, "plain_cpu_ms_per_run": 1000 * cpu["plain"] / n}


async def a_round(client: RuntimeClient, peer: LlmPeer, r: aioredis.Redis, keys: Keys, pid: int,
                  args: argparse.Namespace, i: int) -> dict[str, Any]:
    peer.responder = lambda _request: openai_text(SHORT, usage=(8, 40))
    peer.tokens_per_s = 200
    direct: list[float] = []
    direct_ttft: list[float] = []
    runtime: list[float] = []
    worker_ttft: list[float] = []
    memory: list[int] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(args.ttft_runs):
            for mode in ("direct", "runtime") if n % 2 else ("runtime", "direct"):
                if mode == "direct":
                    lag, ttft = await direct_lag(peer, http)
                    direct.append(lag)
                    direct_ttft.append(ttft)
                else:
                    lag, ttft, run_id = await runtime_lag(client, peer)
                    runtime.append(lag)
                    worker_ttft.append(ttft)
                    memory.append(int(await r.memory_usage(keys.live(run_id)) or 0))
    out: dict[str, Any] = {
        "direct_lag_p50_ms": pct(direct, 50), "direct_lag_p99_ms": pct(direct, 99),
        "runtime_lag_p50_ms": pct(runtime, 50), "runtime_lag_p99_ms": pct(runtime, 99),
        "added_p50_ms": pct(runtime, 50) - pct(direct, 50), "added_p99_ms": pct(runtime, 99) - pct(direct, 99),
        "direct_ttft_p50_ms": pct(direct_ttft, 50), "worker_ttft_p50_ms": pct(worker_ttft, 50),
        "worker_ttft_p99_ms": pct(worker_ttft, 99), "memory_short_run_bytes": statistics.median(memory)}
    peer.tokens_per_s = None
    for what, text in (("long", " ".join(f"w{i}" for i in range(args.long_tokens))),
                       ("flood", "x " * 200_000)):
        peer.responder = lambda _request, text=text: openai_text(text, usage=(8, len(text.split())))
        _, _, run_id = await runtime_lag(client, peer)
        key = keys.live(run_id)
        out[f"memory_{what}_run_bytes"] = int(await r.memory_usage(key) or 0)
        out[f"entries_{what}_run"] = int(await r.xlen(key))
    peer.responder = lambda _request: openai_text(SHORT, usage=(8, 40))
    out.update(await overhead(client, pid, args.sequential))
    print(f"round {i + 1}: first token, reader vs peer's write: runtime p50 {out['runtime_lag_p50_ms']:.2f} / p99 "
          f"{out['runtime_lag_p99_ms']:.2f} ms, direct p50 {out['direct_lag_p50_ms']:.2f} / p99 "
          f"{out['direct_lag_p99_ms']:.2f} ms: added p99 {out['added_p99_ms']:.2f} ms; memory per run "
          f"{out['memory_short_run_bytes']:.0f} B (long {out['memory_long_run_bytes']} B, flood "
          f"{out['memory_flood_run_bytes']} B in {out['entries_flood_run']} entries); step p50 streamed "
          f"{out['streamed_p50_ms']:.2f} ms vs plain {out['plain_p50_ms']:.2f} ms", flush=True)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with LlmPeer() as peer:
        async with bench_servers("stream-bench") as srv:
            write_workflows(srv.workflows, peer.openai_url)
            url = srv.db_url("bench")
            settings = Settings(database_url=url, redis_url=srv.redis.url(), workflows_dir=srv.workflows)
            env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
                   "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING",
                   "AGENTRT_HTTP_ALLOWED_HOSTS": "127.0.0.1", "AGENTRT_WORKER_ID": "bench-stream"}
            with (srv.tmp / "worker.log").open("ab") as log:
                worker = start_worker(env, log)
            r = aioredis.from_url(srv.redis.url())
            try:
                client = await RuntimeClient.connect(settings)
                try:
                    await wait_workflows(client, {"streamed", "plain"}, 30)
                    for _ in range(3):  # warm-up: connections, the first trace bootstrap
                        await runtime_lag(client, peer)
                    for i in range(args.rounds):
                        rounds.append(await a_round(client, peer, r, Keys(settings.redis_prefix), worker.pid,
                                                    args, i))
                finally:
                    await client.close()
            finally:
                await r.aclose()
                stop_worker(worker)
    medians = {k: statistics.median(float(x[k]) for x in rounds) for k in rounds[0]}
    return {"rounds": rounds, "medians": medians, "args": vars(args), "cores": os.cpu_count(),
            "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ttft-runs", type=int, default=100, help="pairs of (direct, through the runtime) per round")
    p.add_argument("--sequential", type=int, default=100, help="runs of each overhead workflow per round")
    p.add_argument("--long-tokens", type=int, default=4000, help="pieces of the long answer (unpaced)")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    m: dict[str, float] = results["medians"]
    print(f"\nlive token streams ({os.cpu_count()} cores; one worker process, Postgres fsync on, the peer and the "
          f"reader in one more process; medians of {args.rounds} rounds)")
    print(f"first token, peer's write → reader: through the runtime p50 {m['runtime_lag_p50_ms']:.2f} ms, p99 "
          f"{m['runtime_lag_p99_ms']:.2f} ms; direct p50 {m['direct_lag_p50_ms']:.2f} ms, p99 "
          f"{m['direct_lag_p99_ms']:.2f} ms; the runtime adds p50 {m['added_p50_ms']:.2f} ms, p99 "
          f"{m['added_p99_ms']:.2f} ms (target ≤ 20 ms p99)")
    print(f"time to first token, request → first piece: direct p50 {m['direct_ttft_p50_ms']:.2f} ms; as the worker "
          f"measures it p50 {m['worker_ttft_p50_ms']:.2f} ms, p99 {m['worker_ttft_p99_ms']:.2f} ms")
    print(f"Redis memory per streaming run: {m['memory_short_run_bytes']:.0f} B (40 tokens), "
          f"{m['memory_long_run_bytes']:.0f} B ({args.long_tokens} tokens, {m['entries_long_run']:.0f} entries), "
          f"flood bound {m['memory_flood_run_bytes']:.0f} B ({m['entries_flood_run']:.0f} entries)")
    print(f"llm step p50: streamed {m['streamed_p50_ms']:.3f} ms, plain {m['plain_p50_ms']:.3f} ms "
          f"({m['overhead_p50_ms']:+.3f} ms); p99 {m['streamed_p99_ms']:.2f} / {m['plain_p99_ms']:.2f} ms; worker CPU "
          f"per run {m['streamed_cpu_ms_per_run']:.2f} / {m['plain_cpu_ms_per_run']:.2f} ms")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "stream.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
