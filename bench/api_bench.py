"""HTTP API: `POST /v1/runs` throughput and latency with one `agentrt serve` process.

Starts its own durable Postgres (fsync on) and Redis (bench/stack.py), one API process, a token, and a
one-step workflow; then drives `POST /v1/runs` with `wrk` (Debian's `wrk`; an httpx load generator when
it is missing) for `--seconds`, `--connections` at once, in `--rounds` rounds. No worker runs: this
measures run creation (validation, one transaction, the work-stream nudge), not execution. With
`--idempotency-keys`, every request carries a fresh Idempotency-Key (one more row in the transaction).

    python bench/api_bench.py [--rounds 3] [--seconds 10] [--connections 32] [--idempotency-keys]

Prints a table and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, start_api  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

WORKFLOW = "name: ping\ninputs: {n: {type: integer, default: 0}}\nsteps:\n  - {id: a, uses: set, with: {n: 1}}\n"

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.body = '{"workflow": "ping", "inputs": {"n": 7}}'
local counter = 0
local keyed = %(keyed)s
function init(args)
  -- each wrk thread its own keys (the same seed in both would replay each other's keys)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%%x+)"), 16))
end
request = function()
  if keyed then
    counter = counter + 1
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["Idempotency-Key"] = "k-" .. tostring(counter) .. "-" .. tostring(math.random(1, 1000000000))
    return wrk.format(nil, nil, headers, nil)
  end
  return wrk.format()
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%f %%f %%f %%f\\n", summary.requests, summary.errors.status,
    summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""



def run_wrk(url: str, token: str, seconds: float, connections: int, keyed: bool) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"token": token, "keyed": "true" if keyed else "false"})
        script = f.name
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "-s", script,
                              url + "/v1/runs"], capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(script)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, bad, duration_us = (int(match.group(i)) for i in (1, 2, 3))
    if bad:
        raise RuntimeError(f"{bad} of {requests} requests were refused: the benchmark measured errors")
    p50, p99, p999, worst = (float(match.group(i)) / 1000 for i in (4, 5, 6, 7))
    return {"requests": requests, "non_2xx": bad, "per_s": requests / (duration_us / 1e6),
            "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": worst, "generator": "wrk"}


async def run_httpx(url: str, token: str, seconds: float, connections: int, keyed: bool) -> dict[str, float]:
    latencies: list[float] = []
    bad = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def one_connection(client: httpx.AsyncClient, n: int) -> None:
        nonlocal bad
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            h = {**headers, "Idempotency-Key": f"k-{n}-{i}"} if keyed else headers
            t0 = time.perf_counter()
            r = await client.post("/v1/runs", json={"workflow": "ping", "inputs": {"n": 7}}, headers=h)
            latencies.append((time.perf_counter() - t0) * 1000)
            bad += r.status_code >= 300

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(one_connection(client, n) for n in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    return {"requests": len(latencies), "non_2xx": bad, "per_s": len(latencies) / elapsed, "p50_ms": pct(50),
            "p99_ms": pct(99), "p999_ms": pct(99.9), "max_ms": latencies[-1], "generator": "httpx"}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    rounds: list[dict[str, float]] = []
    async with bench_servers("api-bench") as srv:
        (srv.workflows / "ping.yaml").write_text(WORKFLOW)
        url = srv.db_url("bench")
        settings = Settings(database_url=url, redis_url=srv.redis.url(), workflows_dir=srv.workflows)
        client = await RuntimeClient.connect(settings)
        try:
            token, _ = await client.create_api_token("bench", ["runs:write", "runs:read"])
            await client.start_run("ping")  # registers the workflow (no worker runs in this benchmark)
        finally:
            await client.close()
        env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
               "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING"}
        with (srv.tmp / "api.log").open("ab") as log:
            api, base = await start_api(env, log)
        try:
            use_wrk = shutil.which("wrk") is not None and not args.httpx
            for i in range(args.rounds):
                if use_wrk:
                    figures = await asyncio.to_thread(run_wrk, base, token, args.seconds, args.connections,
                                                      args.idempotency_keys)
                else:
                    figures = await run_httpx(base, token, args.seconds, args.connections, args.idempotency_keys)
                rounds.append(figures)
                print(f"round {i + 1}: {figures['per_s']:.0f} runs/s, p50 {figures['p50_ms']:.1f} ms, "
                      f"p99 {figures['p99_ms']:.1f} ms, non-2xx {figures['non_2xx']} ({figures['generator']})",
                      flush=True)
        finally:
            api.terminate()
            api.wait(15)
        client = await RuntimeClient.connect(settings)
        try:  # every accepted request created its own run (none was an idempotent replay)
            created = await client.pool.fetchval("SELECT count(*) FROM runs") - 1
        finally:
            await client.close()
        answered = sum(int(r["requests"]) for r in rounds)
        print(f"runs in Postgres: {created}; requests answered: {answered}", flush=True)
    medians = {k: statistics.median(float(r[k]) for r in rounds)
               for k in ("per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms")}
    return {"rounds": rounds, "medians": medians, "args": vars(args), "cores": os.cpu_count(),
            "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--idempotency-keys", action="store_true", help="a fresh Idempotency-Key on every request")
    p.add_argument("--httpx", action="store_true", help="use the Python load generator even if wrk is installed")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    m: dict[str, float] = results["medians"]  # type: ignore[assignment]
    print(f"\nPOST /v1/runs, one API process ({os.cpu_count()} cores; Postgres fsync on; the load generator on the "
          f"same machine; medians of {args.rounds} rounds of {args.seconds:.0f} s, {args.connections} connections)")
    print(f"runs created per second {m['per_s']:.0f} (target >= 1000); latency p50 {m['p50_ms']:.1f} ms, "
          f"p99 {m['p99_ms']:.1f} ms (target < 50), p99.9 {m['p999_ms']:.1f} ms, max {m['max_ms']:.1f} ms")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "api.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
