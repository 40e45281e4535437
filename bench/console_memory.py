"""Console memory over a long stretch of live updates: the real `agentrt console`, in a terminal.

Starts Postgres and Redis from the wheels and a worker (like the other benchmarks), keeps
`--live-runs` runs of a 10-step workflow executing, and runs `python -m console` (what `agentrt
console` runs) in a pseudo-terminal of `--size` columns x rows, exactly as a user over SSH would. The
console process holds nothing of the benchmark's: its resident set size is read from the outside
(psutil) every `--sample-every` seconds. Every `--cycle-every` seconds the benchmark presses keys the
way an operator would (open the newest run, its waterfall, back, the events screen, the runs screen)
so every screen takes its share of live updates. Prints the figures and writes
bench/results/console_memory.json.

    python bench/console_memory.py [--minutes 60] [--live-runs 50] [--size 160x48]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import (  # noqa: E402
    NAP_TASKS,
    bench_servers,
    nap_workflow,
    slope_per_min,
    start_worker,
    stop_worker,
    wait_workflows,
)

from worker.client import RuntimeClient  # noqa: E402
from worker.config import Settings  # noqa: E402

# (seconds into a cycle, keys): open the newest run, its waterfall, back; events; runs again
CYCLE: list[tuple[float, bytes]] = [(0, b"g"), (1, b"\r"), (11, b"w"), (21, b"\x1b"), (26, b"5"), (36, b"1")]


class Terminal:
    """A pseudo-terminal running the console; its output is read (and dropped) so it never blocks."""

    def __init__(self, cmd: list[str], env: dict[str, str], cols: int, rows: int) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.bytes_out = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.bytes_out += len(chunk)

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.press(b"q")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        os.close(self.master)


async def measure(client: RuntimeClient, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    term = Terminal([sys.executable, "-m", "console"], env, cols, rows)
    console = psutil.Process(term.proc.pid)
    samples: list[tuple[float, float]] = []
    started = 0
    completed_before = (await client.count_runs()).get("completed", 0)
    seconds = args.minutes * 60
    try:
        t0 = time.monotonic()
        next_sample, cycle_start, cycle_step = 0.0, 0.0, 0
        last_report = 0.0
        while (elapsed := time.monotonic() - t0) < seconds:
            if term.proc.poll() is not None:
                raise RuntimeError(f"the console exited with {term.proc.returncode} after {elapsed:.0f}s")
            counts = await client.count_runs()
            active = counts.get("pending", 0) + counts.get("running", 0)
            if active < args.live_runs:
                started += len(await client.start_runs("live", [{} for _ in range(args.live_runs - active)]))
            if elapsed >= next_sample:
                samples.append((elapsed, console.memory_info().rss / 2**20))
                next_sample += args.sample_every
            if args.cycle_every and elapsed >= cycle_start + CYCLE[cycle_step][0]:
                term.press(CYCLE[cycle_step][1])
                cycle_step += 1
                if cycle_step == len(CYCLE):
                    cycle_step, cycle_start = 0, cycle_start + args.cycle_every
            if elapsed - last_report >= 60:
                last_report = elapsed
                print(f"  {elapsed / 60:5.1f} min  console RSS {samples[-1][1]:7.1f} MB  runs started {started}",
                      flush=True)
            await asyncio.sleep(0.5)
        cpu = console.cpu_times()
    finally:
        term.close()
    completed = (await client.count_runs()).get("completed", 0) - completed_before
    warm = [s for s in samples if s[0] >= args.warmup]
    half = [s for s in samples if s[0] >= seconds / 2]
    return {
        "minutes": args.minutes, "size": args.size, "live_runs": args.live_runs, "runs_started": started,
        "runs_completed": completed, "console_cpu_s": cpu.user + cpu.system,
        "terminal_output_mb": term.bytes_out / 2**20,
        "rss_mb_first": samples[0][1], "rss_mb_after_warmup": warm[0][1] if warm else float("nan"),
        "rss_mb_last": samples[-1][1], "rss_mb_max": max(s[1] for s in samples),
        "slope_mb_per_min_after_warmup": slope_per_min(warm),
        "slope_mb_per_min_second_half": slope_per_min(half),
        "samples": [(round(t), round(m, 2)) for t, m in samples],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_servers("console-memory", databases=("live",)) as srv:
        (srv.workflows / "bench_memory.py").write_text(NAP_TASKS)
        (srv.workflows / "live.yaml").write_text(nap_workflow("live", "bench_memory"))
        url = srv.db_url("live")
        env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
               "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_CONCURRENCY": "200",
               "AGENTRT_LOG_LEVEL": "WARNING", "TERM": "xterm-256color"}
        worker = None
        with (srv.tmp / "worker.log").open("wb") as log:
            try:
                worker = start_worker(env, log)
                client = await RuntimeClient.connect(Settings(database_url=url, redis_url=srv.redis.url(),
                                                              workflows_dir=srv.workflows))
                try:
                    await wait_workflows(client, {"live"})
                    return await measure(client, env, args)
                finally:
                    await client.close()
            finally:
                stop_worker(worker)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--live-runs", type=int, default=50, help="runs kept executing (default 50)")
    p.add_argument("--size", default="160x48", help="terminal COLSxROWS (default 160x48)")
    p.add_argument("--sample-every", type=float, default=10, help="seconds between RSS samples")
    p.add_argument("--warmup", type=float, default=120, help="seconds before the slope is computed")
    p.add_argument("--cycle-every", type=float, default=60,
                   help="seconds between rounds of key presses through the screens (0: stay on the runs list)")
    args = p.parse_args()
    r = asyncio.run(main_async(args))
    print(f"\nAgentRuntime console memory ({os.cpu_count()} cores; `python -m console` in a {r['size']} pty, "
          f"{r['live_runs']} runs executing, {r['minutes']:.0f} min)")
    for label, value in [
        ("runs completed while the console watched", r["runs_completed"]),
        ("console CPU time (s)", r["console_cpu_s"]),
        ("terminal output (MB)", r["terminal_output_mb"]),
        ("RSS at start (MB)", r["rss_mb_first"]),
        (f"RSS after {args.warmup:.0f}s warm-up (MB)", r["rss_mb_after_warmup"]),
        ("RSS at the end (MB)", r["rss_mb_last"]),
        ("RSS max (MB)", r["rss_mb_max"]),
        ("RSS slope after warm-up (MB/min)", r["slope_mb_per_min_after_warmup"]),
        ("RSS slope over the second half (MB/min)", r["slope_mb_per_min_second_half"]),
    ]:
        print(f"{label:60} {value:>10.2f}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "console_memory.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
