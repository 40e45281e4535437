"""What every benchmark starts: a durable Postgres (fsync on) and a Redis from the wheels, migrated
databases, `agentrt worker` processes; stopped again on exit. Shared by the bench scripts."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worker.client import RuntimeClient  # noqa: E402
from worker.devstack import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from worker.devstack.postgres import create_database  # noqa: E402
from worker.store.migrate import migrate  # noqa: E402


@dataclass
class BenchServers:
    tmp: Path
    workflows: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis

    def db_url(self, name: str) -> str:
        return self.pg.url(name)


@asynccontextmanager
async def bench_servers(prefix: str, databases: Iterable[str] = ("bench",)) -> AsyncIterator[BenchServers]:
    """Postgres and Redis in a fresh temporary folder, with each database created and migrated."""
    tmp = Path(tempfile.mkdtemp(prefix=f"agentrt-{prefix}-"))
    os.chmod(tmp, 0o755)  # Postgres runs as an unprivileged user when we are root
    servers = BenchServers(tmp, tmp / "workflows", EmbeddedPostgres(tmp / "pg", fsync=True),
                           EmbeddedRedis(tmp / "redis"))
    servers.workflows.mkdir()
    servers.pg.start()
    servers.redis.start()
    try:
        for name in databases:
            create_database(servers.pg.url(), name)
            await migrate(servers.pg.url(name))
        yield servers
    finally:
        servers.redis.stop()
        servers.pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def start_worker(env: dict[str, str], log: IO[bytes], python_args: Iterable[str] = ()) -> subprocess.Popen[bytes]:
    # AGENTRT_BENCH_WORKER_ROOT: another checkout's worker (e.g. `git worktree add /tmp/old <commit>`), to
    # compare two versions of the code in one run: `engine_bench.py --variant old:AGENTRT_BENCH_WORKER_ROOT=/tmp/old`
    root = env.get("AGENTRT_BENCH_WORKER_ROOT") or ROOT
    return subprocess.Popen([sys.executable, *python_args, "-m", "worker", "worker"], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if worker is None:
        return
    worker.terminate()
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)


async def wait_workflows(client: RuntimeClient, names: set[str], seconds: float = 10.0) -> None:
    """The worker registers the workflow files when it starts."""
    for _ in range(int(seconds * 10)):
        if {w.name for w in await client.list_workflows()} >= names:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the worker did not load {sorted(names)} within {seconds:.0f}s")


NAP_TASKS = """
import asyncio

async def nap(seconds=0.2):
    await asyncio.sleep(seconds)
    return None
"""
"""A python module for the workflows directory: an async step that sleeps 200 ms."""


def nap_workflow(name: str, module: str, steps: int = 10) -> str:
    """A workflow of `steps` sequential `module:nap` python steps (the console benchmarks' live load)."""
    body = "".join(f"  - {{id: s{i}, uses: python, with: {{function: \"{module}:nap\"}}}}\n"
                   for i in range(1, steps + 1))
    return f"\nname: {name}\nsteps:\n{body}"


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute (nan with fewer than two)."""
    if len(samples) < 2:
        return float("nan")
    xs, ys = [t / 60 for t, _ in samples], [v for _, v in samples]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(sum((x - mx) ** 2 for x in xs), 1e-9)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_api(env: dict[str, str], log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str]:
    """`agentrt serve` on a free port; returns the process and its base URL once /healthz answers."""
    import httpx

    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "worker", "serve", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=1) as probe:
        for _ in range(100):
            try:
                if (await probe.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    return api, base


def proc_stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds user + system) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    return proc_stat(pid)[1]
