"""Peers: AgentRuntime against DBOS Transact and Restate, on the same machine and in the same run.

    python bench/peers.py [--peers dbos,restate] [--rounds 3] [--sequential-runs 40]
                          [--concurrent-runs 500] [--steps 10] [--json]
                          [--agentrt-env AGENTRT_PYTHON_ISOLATION=inline]

W1: sequential 10-step runs of no-op steps, each run's time from the caller starting it to the caller
seeing its result (p50 / p99). W2: that many concurrent 10-step runs, steps/s from the first start to the
last result seen. Every round runs every engine once, in an order that alternates between rounds, each
engine's processes started for its turn and stopped after it; the table shows medians, and every peer's
ratio to AgentRuntime is the median of the per-round ratios. What each engine's figures include, and the
durability each runs with (its defaults), is in bench/peers/peer_engines.py and bench/README.md ("Peers").

The peers install on first use into their own venvs and npm folder under ~/.cache/agentrt-bench/peers/
(`AGENTRT_BENCH_CACHE` moves it), from the pins in bench/peers/; the project's own environment is never
touched. A peer that cannot be installed or started is reported as skipped, with the reason.
Prints a table and writes bench/results/peers.json (`--json`: the same document on stdout, last).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "peers"))  # the helpers beside the peer apps (not a package)

from peer_engines import AgentRuntime, Dbos, Restate  # noqa: E402
from peer_install import (  # noqa: E402
    REQUIREMENTS,
    RESTATE_SERVER_VERSION,
    PeerUnavailable,
    ensure_restate_server,
    ensure_venv,
)
from peer_report import AGENTRT, Round, format_report  # noqa: E402
from stack import bench_servers  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

PEERS = ("dbos", "restate")


def versions() -> dict[str, str]:
    """What was measured: the peers' pinned top-level packages."""
    pins = {}
    for path in REQUIREMENTS.values():
        for line in path.read_text().splitlines():
            pkg, _, version = line.partition("==")
            if pkg.strip().lower() in {"dbos", "restate-sdk", "hypercorn"}:
                pins[pkg.strip().lower()] = version.strip()
    pins["restate-server"] = RESTATE_SERVER_VERSION
    return pins


def install(peers: list[str], skipped: dict[str, str]) -> dict[str, Path]:
    """Each chosen peer's executables, installing on first use; a peer that fails goes to `skipped`."""
    got: dict[str, Path] = {}
    for peer in peers:
        try:
            if peer == "restate":
                got["restate-server"] = ensure_restate_server()
            got[peer] = ensure_venv(peer)
        except PeerUnavailable as exc:
            skipped[peer] = f"not installed: {exc}"
    return got


def log_tail(path: Path, lines: int = 5) -> str:
    """The end of a peer's log for the report (the logs live in the benchmark's temporary folder)."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


async def run_rounds(args: argparse.Namespace, skipped: dict[str, str]) -> list[Round]:
    paths = install(args.peers, skipped)
    rounds: list[Round] = []
    async with bench_servers("peers") as srv:
        url = srv.db_url("bench")
        srv.pg.create_database("dbos")  # DBOS's system database, in the same Postgres (fsync on)
        client = await RuntimeClient.connect(Settings(database_url=url, redis_url=srv.redis.url(),
                                                      workflows_dir=srv.workflows))
        engines: dict[str, AgentRuntime | Dbos | Restate] = {
            AGENTRT: AgentRuntime(srv, client, url, args.steps, args.agentrt_env)}
        if "dbos" in args.peers and "dbos" not in skipped:
            engines["dbos"] = Dbos(paths["dbos"], srv.db_url("dbos"), srv.tmp, args.steps)
        if "restate" in args.peers and "restate" not in skipped:
            engines["restate"] = Restate(paths["restate"], paths["restate-server"], srv.tmp, args.steps)
        try:
            for r in range(args.rounds):
                order = [n for n in (engines if r % 2 == 0 else reversed(engines)) if n not in skipped]
                result: Round = {}
                for name in order:
                    try:
                        result[name] = await engines[name].measure(args.sequential_runs, args.concurrent_runs,
                                                                   f"round{r + 1}")
                    except Exception as exc:
                        if name == AGENTRT:
                            raise
                        skipped[name] = f"failed in round {r + 1}: {type(exc).__name__}: {exc}"
                        print(f"  {name}: {skipped[name]}\n  its log's last lines: "
                              f"{log_tail(srv.tmp / f'{name}-round{r + 1}.log')}", flush=True)
                rounds.append(result)
                print(f"round {r + 1}/{args.rounds} ({' → '.join(order)}): " + "; ".join(
                    f"{n}: W1 p50 {s['w1_p50_ms']:.1f} ms, W2 {s['w2_steps_per_s']:,.0f} steps/s"
                    for n, s in result.items()), flush=True)
        finally:
            await client.close()
    return rounds


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers: dbos, restate (default: both)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential-runs", type=int, default=40, help="W1: sequential runs per engine per round")
    p.add_argument("--concurrent-runs", type=int, default=500, help="W2: concurrent runs per engine per round")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", action="store_true", help="also print the results as JSON on stdout, last")
    p.add_argument("--agentrt-env", default="", metavar="ENV=VALUE[,ENV=VALUE]",
                   help="settings for AgentRuntime's worker, e.g. AGENTRT_PYTHON_ISOLATION=inline (default: none, "
                        "the project's defaults)")
    args = p.parse_args(argv)
    try:
        args.agentrt_env = dict(a.split("=", 1) for a in args.agentrt_env.split(",") if a.strip())
    except ValueError:
        p.error(f"--agentrt-env: expected ENV=VALUE[,ENV=VALUE], got {args.agentrt_env!r}")
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = [x for x in args.peers if x not in PEERS]
    if unknown:
        p.error(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if min(args.rounds, args.sequential_runs, args.concurrent_runs, args.steps) < 1:
        p.error("--rounds, --sequential-runs, --concurrent-runs and --steps must be at least 1")
    return args


def main() -> None:
    args = parse()
    skipped: dict[str, str] = {}
    load_before = os.getloadavg()
    rounds = asyncio.run(run_rounds(args, skipped))
    load = os.getloadavg()
    header = (f"\nPeers ({os.cpu_count()} cores, one run; medians of {args.rounds} round(s); load average "
              f"{load_before[0]:.2f} before, {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after)")
    if args.agentrt_env:
        header += "\nAgentRuntime's worker with " + ", ".join(f"{k}={v}" for k, v in args.agentrt_env.items())
    print(format_report(rounds, [AGENTRT, *args.peers], skipped, steps=args.steps,
                        concurrent_runs=args.concurrent_runs, header=header))
    doc = {"args": vars(args), "versions": versions(), "rounds": rounds, "skipped": skipped,
           "load_average_before": load_before, "load_average_after": load}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "peers.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
