"""Event to resumed step: how long after `POST /v1/events` a run parked in a `wait` step moves on.

Starts its own durable Postgres (fsync on) and Redis (bench/stack.py), one `agentrt worker`, one
`agentrt serve`, and `--runs` runs of a two-step workflow (`wait` for `reply` with the run's own key,
then a `set`). Once every run is parked (no worker holds it), events are sent over HTTP:

- sequential: one event at a time; latency = from just before the POST to the live event (Redis) that
  says the `wait` step completed, i.e. the event was recorded, matched, the run leased again, its
  events loaded, the step completed and committed, and the commit published;
- concurrent: `--concurrency` senders at once over the remaining runs (latency under load).

    python bench/wait_bench.py [--rounds 3] [--runs 200] [--concurrency 16]

Prints a table and writes bench/results/wait.json.
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, start_api, start_worker, stop_worker, wait_workflows  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

WORKFLOW = """
name: waiter
inputs: {k: {type: string}}
steps:
  - {id: hold, uses: wait, with: {event: reply, key: "${{ inputs.k }}", timeout: 1h, lookback: 0s}}
  - {id: after, uses: set, with: {done: true}}
"""



def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Resumes:
    """Arrival times of `hold` completions on the live stream, by run id."""

    def __init__(self, client: RuntimeClient) -> None:
        self.client = client
        self.seen: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        async for live in self.client.watch_events("$", block_ms=200):
            for entry in live.data.get("events") or []:
                if entry[1] == "step.completed" and entry[2] == "hold" and live.run_id:
                    now = time.perf_counter()
                    self.seen[live.run_id] = now
                    fut = self.waiters.pop(live.run_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(now)

    def start(self) -> None:
        self.task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def expect(self, run_id: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if run_id in self.seen:
            fut.set_result(self.seen[run_id])
        else:
            self.waiters[run_id] = fut
        return fut


async def one(api: httpx.AsyncClient, token: str, resumes: Resumes, run_id: str, key: str) -> float:
    done = resumes.expect(run_id)
    t0 = time.perf_counter()
    r = await api.post("/v1/events", json={"name": "reply", "key": key, "data": {"ok": True}},
                       headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 202 or r.json()["delivered_to"] != [run_id]:
        raise RuntimeError(f"event for {run_id} not delivered: {r.status_code} {r.text}")
    return (await asyncio.wait_for(done, 30) - t0) * 1000


async def a_round(srv: object, settings: Settings, api_url: str, token: str, n: int, concurrency: int,
                  tag: str) -> dict[str, float]:
    client = await RuntimeClient.connect(settings)
    resumes = Resumes(client)
    resumes.start()
    try:
        keys = [f"{tag}-{i}" for i in range(n)]
        run_ids = await client.start_runs("waiter", [{"k": k} for k in keys])
        for _ in range(600):
            if len(await client.open_waits(name="reply", limit=n + 1)) >= n:
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the runs did not all reach their wait step")
        await asyncio.sleep(1.0)  # let every run park (its lease released)
        half = n // 2
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as api:
            sequential = [await one(api, token, resumes, run_ids[i], keys[i]) for i in range(half)]
            sem = asyncio.Semaphore(concurrency)

            async def limited(i: int) -> float:
                async with sem:
                    return await one(api, token, resumes, run_ids[i], keys[i])

            started = time.perf_counter()
            loaded = await asyncio.gather(*(limited(i) for i in range(half, n)))
            elapsed = time.perf_counter() - started
    finally:
        await resumes.stop()
        await client.close()
    return {"seq_p50_ms": pct(sequential, 50), "seq_p99_ms": pct(sequential, 99), "seq_max_ms": max(sequential),
            "conc_p50_ms": pct(loaded, 50), "conc_p99_ms": pct(loaded, 99), "conc_per_s": len(loaded) / elapsed}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    rounds: list[dict[str, float]] = []
    async with bench_servers("wait-bench") as srv:
        (srv.workflows / "waiter.yaml").write_text(WORKFLOW)
        url = srv.db_url("bench")
        settings = Settings(database_url=url, redis_url=srv.redis.url(), workflows_dir=srv.workflows)
        env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
               "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING"}
        with (srv.tmp / "worker.log").open("ab") as log:
            worker = start_worker(env, log)
            api, base = await start_api(env, log)
        try:
            client = await RuntimeClient.connect(settings)
            try:
                token, _ = await client.create_api_token("bench", ["events:write"])
                await wait_workflows(client, {"waiter"})
            finally:
                await client.close()
            for i in range(args.rounds):
                figures = await a_round(srv, settings, base, token, args.runs, args.concurrency, f"r{i}")
                rounds.append(figures)
                print(f"round {i + 1}: sequential p50 {figures['seq_p50_ms']:.1f} ms, p99 {figures['seq_p99_ms']:.1f} "
                      f"ms; {args.concurrency} at once p50 {figures['conc_p50_ms']:.1f} ms, "
                      f"p99 {figures['conc_p99_ms']:.1f} ms ({figures['conc_per_s']:.0f} resumes/s)", flush=True)
        finally:
            api.terminate()
            api.wait(15)
            stop_worker(worker)
    medians = {k: statistics.median(float(r[k]) for r in rounds) for k in rounds[0]}
    return {"rounds": rounds, "medians": medians, "args": vars(args), "cores": os.cpu_count(),
            "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=200, help="waiting runs per round (half sequential, half at once)")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    m: dict[str, float] = results["medians"]  # type: ignore[assignment]
    print(f"\nevent -> resumed wait step ({os.cpu_count()} cores; one worker, one API process, Postgres fsync on, "
          f"the sender on the same machine; medians of {args.rounds} rounds of {args.runs} parked runs)")
    print(f"sequential p50 {m['seq_p50_ms']:.1f} ms, p99 {m['seq_p99_ms']:.1f} ms (target < 100); "
          f"{args.concurrency} senders p50 {m['conc_p50_ms']:.1f} ms, p99 {m['conc_p99_ms']:.1f} ms, "
          f"{m['conc_per_s']:.0f} resumes/s")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "wait.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
