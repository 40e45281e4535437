"""Human task committed -> its webhook arriving: the latency of `task.created` notifications.

Starts its own durable Postgres (fsync on) and Redis (bench/stack.py), an OpenBao (the target's signing secret),
one `agentrt worker` and a local receiver (tests/support/notify_receiver.py: a threaded http.server on 127.0.0.1
that verifies every HMAC signature, as a receiver should). Each round starts `--tasks` runs of a one-step approval
workflow:

- paced: one run every `--gap` ms (a steady trickle of approvals);
- burst: all of them at once (`start_runs`, one transaction).

Latency = arrival at the receiver (its clock) minus `human_tasks.created_at` (Postgres's clock, the start of the
transaction that committed the task: a little earlier than the commit, so the figure is an upper bound). Every
process runs on this machine, so both clocks are the same.

    python bench/notify_bench.py [--rounds 3] [--tasks 300] [--gap 20]

Prints a table and writes bench/results/notify.json.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, start_worker, stop_worker, wait_workflows  # noqa: E402

from tests.support.notify_receiver import NotifyReceiver  # noqa: E402
from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.devstack import EmbeddedOpenBao  # noqa: E402

WORKFLOW = """
name: gate
inputs: {n: {type: integer}}
steps:
  - {id: ok, uses: approval, with: {prompt: "approve ${{ inputs.n }}?", timeout: 1h}}
"""
NOTIFY = """
targets:
  hook: {{url: "{url}", secret: bench, timeout: 5s}}
routes:
  - {{kinds: [task.created], targets: [hook]}}
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def one_round(client: RuntimeClient, rx: NotifyReceiver, tasks: int, gap_ms: float, burst: bool,
                    offset: int) -> dict[str, float]:
    before = len(rx.snapshot())
    inputs = [{"n": offset + i} for i in range(tasks)]
    if burst:
        run_ids = await client.start_runs("gate", inputs)
    else:
        run_ids = []
        for item in inputs:
            run_ids.append(await client.start_run("gate", item))
            await asyncio.sleep(gap_ms / 1000)
    if not await rx.wait_for_async(lambda r: len(r.snapshot()) >= before + tasks, 120):
        raise RuntimeError(f"only {len(rx.snapshot()) - before} of {tasks} webhooks arrived within 120 s")
    created = {r["task_id"]: r["created"] for r in await client.pool.fetch(
        "SELECT task_id::text, extract(epoch FROM created_at)::float8 AS created FROM human_tasks "
        "WHERE run_id = ANY($1::uuid[])", run_ids)}
    arrivals: dict[str, float] = {}
    for d in rx.snapshot()[before:]:
        assert d.verified and d.doc is not None, d.error
        arrivals.setdefault(d.doc["task"]["task_id"], d.wall)
    lat = [(arrivals[t] - c) * 1000 for t, c in created.items() if t in arrivals]
    assert len(lat) == tasks, (len(lat), tasks)
    return {"p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99), "max_ms": max(lat),
            "duplicates": len(rx.snapshot()) - before - tasks}


async def main(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, list[dict[str, float]]] = {"paced": [], "burst": []}
    bao = EmbeddedOpenBao(log_path=Path("/tmp") / f"agentrt-notify-bench-{os.getpid()}.log")
    bao.start()
    try:
        bao.bootstrap()
        import hvac

        hvac.Client(url=bao.addr, token=bao.root_token).secrets.kv.v2.create_or_update_secret(
            path="agentrt/notify/bench", secret={"signing_secret": "bench-signing-secret"}, mount_point="secret")
        async with bench_servers("notify") as srv:
            url = srv.db_url("bench")
            (srv.workflows / "gate.yaml").write_text(WORKFLOW)
            with NotifyReceiver(secret="bench-signing-secret") as rx:
                (srv.workflows / "notify.yaml").write_text(NOTIFY.format(url=rx.url))
                env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
                       "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING",
                       "VAULT_ADDR": bao.addr, "VAULT_TOKEN": bao.root_token}
                settings = Settings(database_url=url, redis_url=srv.redis.url(), workflows_dir=srv.workflows)
                with (srv.tmp / "worker.log").open("wb") as log:
                    worker = start_worker(env, log)
                    try:
                        async with await RuntimeClient.connect(settings) as client:
                            await wait_workflows(client, {"gate"}, 30)
                            await one_round(client, rx, 20, args.gap, False, 10**6)  # warm-up
                            for i in range(args.rounds):
                                for mode in args.modes:
                                    figures = await one_round(client, rx, args.tasks, args.gap, mode == "burst",
                                                              (2 * i + (mode == "burst")) * args.tasks)
                                    results[mode].append(figures)
                                    print(f"round {i + 1} {mode}: " + ", ".join(
                                        f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
                    finally:
                        stop_worker(worker)
    finally:
        bao.stop()
    medians = {mode: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
               for mode, rounds in results.items() if rounds}
    return {"rounds": results, "medians": medians, "args": vars(args), "cores": os.cpu_count(),
            "at": time.strftime("%Y-%m-%d %H:%M:%S")}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=300, help="approval runs per round and mode")
    p.add_argument("--gap", type=float, default=20.0, help="ms between runs in the paced mode")
    p.add_argument("--modes", nargs="+", choices=("paced", "burst"), default=["paced", "burst"])
    args = p.parse_args()
    results = asyncio.run(main(args))
    m: dict[str, dict[str, float]] = results["medians"]  # type: ignore[assignment]
    print(f"\ntask committed -> webhook arrived ({args.tasks} tasks per round and mode, one worker, medians of "
          f"{args.rounds} rounds)")
    print(f"{'mode':<8}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}")
    for mode, f in m.items():
        print(f"{mode:<8}{f['p50_ms']:>8.1f}ms{f['p90_ms']:>8.1f}ms{f['p99_ms']:>8.1f}ms{f['max_ms']:>8.1f}ms")
    out = ROOT / "bench" / "results" / "notify.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    cli()
