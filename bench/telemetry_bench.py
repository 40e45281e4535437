"""Telemetry overhead: per-step overhead and throughput with tracing off, on (span store), on + OTLP.

Starts its own durable Postgres (fsync on), Redis and an OTLP receiver (tests/support/otlp_receiver.py),
then runs one worker process per configuration, in alternating rounds to even out drift:

  off    AGENTRT_TELEMETRY=off (NoTelemetry: the engine's hooks do nothing)
  store  the default: spans derived and kept in Postgres, no OTEL endpoint (nothing exported)
  otlp   the default plus OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf to the local receiver) and metrics

    python bench/telemetry_bench.py [--rounds 2] [--sequential-runs 30] [--concurrent-runs 300] [--steps 10]

Prints a table and writes bench/results/telemetry.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_bench import TASKS, pct, run_gaps, steps_per_s, workflow  # noqa: E402
from stack import BenchServers, bench_servers  # noqa: E402

from tests.support.otlp_receiver import OtlpReceiver  # noqa: E402
from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

STOP_TIMEOUTS: list[str] = []  # workers that did not stop within 30 s of SIGTERM (killed)


async def one_config(env: dict[str, str], settings: Settings, args: argparse.Namespace,
                     log: Path) -> tuple[list[float], float, float, float]:
    profile = os.environ.get("BENCH_PROFILE")
    prof = ["-m", "cProfile", "-o", f"{profile}.{log.stem}"] if profile else []
    worker = subprocess.Popen([sys.executable, *prof, "-m", "worker", "worker"], cwd=ROOT, env=env,
                              stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    client = await RuntimeClient.connect(settings)
    try:
        for _ in range(200):
            if await client.pool.fetchval(
                    "SELECT count(*) FROM workers WHERE heartbeat_at > now() - interval '2 seconds' "
                    "AND stopped_at IS NULL") >= 1:
                break
            await asyncio.sleep(0.05)
        await run_gaps(client, "seq", 3)  # warm-up
        proc = psutil.Process(worker.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        gaps = await run_gaps(client, "seq", args.sequential_runs)
        async_gaps = await run_gaps(client, "seq-async", args.sequential_runs)
        await asyncio.sleep(1.0)  # let the telemetry pipeline's batch work happen inside the window
        cpu_per_step = (sum(proc.cpu_times()[:2]) - cpu0) / (2 * args.sequential_runs * args.steps)
        throughput = await steps_per_s(client, "seq-async", args.concurrent_runs, args.steps)
        return gaps + async_gaps, throughput, pct(gaps, 50), cpu_per_step
    finally:
        await client.close()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            STOP_TIMEOUTS.append(str(log))
            worker.kill()
            worker.wait()


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    async with bench_servers("tbench") as srv:
        rx = OtlpReceiver(parse=False).start()  # counts bytes only: the collector's cost is not ours
        try:
            return await _measure(args, srv, rx)
        finally:
            rx.stop()


async def _measure(args: argparse.Namespace, srv: BenchServers, rx: OtlpReceiver) -> dict[str, dict[str, float]]:
    tmp, wf_dir, rd = srv.tmp, srv.workflows, srv.redis
    (wf_dir / "bench_tasks.py").write_text(TASKS)
    (wf_dir / "seq.yaml").write_text(workflow("seq", args.steps, "noop"))
    (wf_dir / "seq-async.yaml").write_text(workflow("seq-async", args.steps, "anoop"))
    url = srv.db_url("bench")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTRT_"))}
    base.update(AGENTRT_DATABASE_URL=url, AGENTRT_REDIS_URL=rd.url(), AGENTRT_WORKFLOWS_DIR=str(wf_dir),
                AGENTRT_CONCURRENCY=str(max(600, args.concurrent_runs)),
                AGENTRT_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                AGENTRT_DB_POOL_SIZE="8")
    configs = {
        "off": {**base, "AGENTRT_TELEMETRY": "off"},
        "store": dict(base),
        "otlp": {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint, "OTEL_SERVICE_NAME": "bench",
                 "OTEL_METRIC_EXPORT_INTERVAL": "5000"},
        "traces": {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint, "OTEL_METRICS_EXPORTER": "none"},
    }
    configs = {k: v for k, v in configs.items() if k in args.configs.split(",")}
    settings = Settings(database_url=url, redis_url=rd.url(), workflows_dir=wf_dir)
    gaps: dict[str, list[float]] = {k: [] for k in configs}
    sync_p50: dict[str, list[float]] = {k: [] for k in configs}
    tput: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        for name, env in configs.items():
            g, t, p, c = await one_config(env, settings, args, tmp / f"worker-{name}.log")
            cpu[name].append(c)
            gaps[name].extend(g)
            tput[name].append(t)
            sync_p50[name].append(p)
    results = {name: {"step_overhead_p50_ms": pct(gaps[name], 50) * 1000,
                      "step_overhead_p90_ms": pct(gaps[name], 90) * 1000,
                      "step_overhead_p99_ms": pct(gaps[name], 99) * 1000,
                      "worker_cpu_per_step_us": sorted(cpu[name])[len(cpu[name]) // 2] * 1e6,
                      "round_p50s_ms": [round(x * 1000, 3) for x in sync_p50[name]],
                      "steps_per_s": max(tput[name]), "samples": len(gaps[name])} for name in configs}
    if "otlp" in results:
        results["otlp"]["export_requests"] = rx.requests
        results["otlp"]["export_bytes"] = rx.bytes_received
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sequential-runs", type=int, default=30)
    p.add_argument("--concurrent-runs", type=int, default=300)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--configs", default="off,store,otlp", help="of off,store,otlp,traces (no metrics)")
    args = p.parse_args()
    started = time.time()
    results = asyncio.run(main_async(args))
    off = results.get("off")
    print(f"\nAgentRuntime telemetry overhead ({os.cpu_count()} cores; Postgres fsync on; "
          f"{args.rounds} rounds; {time.time() - started:.0f}s)")
    print(f"{'configuration':13} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'added p50':>10} "
          f"{'worker CPU/step':>16} {'added CPU':>10} {'steps/s':>9}")
    for name, r in results.items():
        added = (r["step_overhead_p50_ms"] / off["step_overhead_p50_ms"] - 1) * 100 if off else float("nan")
        cpu_added = (r["worker_cpu_per_step_us"] / off["worker_cpu_per_step_us"] - 1) * 100 if off else float("nan")
        print(f"{name:13} {r['step_overhead_p50_ms']:8.3f} {r['step_overhead_p90_ms']:8.3f} "
              f"{r['step_overhead_p99_ms']:8.3f} {added:9.1f}% {r['worker_cpu_per_step_us']:13.0f} us "
              f"{cpu_added:9.1f}% {r['steps_per_s']:9.0f}   "
              f"sync p50 per round: {r['round_p50s_ms']}")
    if STOP_TIMEOUTS:
        print(f"workers killed after not stopping within 30 s: {STOP_TIMEOUTS}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "telemetry.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
