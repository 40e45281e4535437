"""The three engines of `bench/peers.py`, each measured the same way in its turn of a round.

Every turn starts the engine's own processes, warms up (3 sequential runs, then 100 concurrent ones),
measures W1 (sequential 10-step runs of no-op steps: each run's time from the caller starting it to the
caller seeing its result) and W2 (that many concurrent 10-step runs: steps/s from the first start to the
last result seen), and stops its processes again, so that no engine's processes run during another's turn
(the shared Postgres and Redis idle). Each engine runs with its own defaults:

- AgentRuntime: one `agentrt worker` (as bench/engine_bench.py: concurrency 600, 8 Postgres connections,
  default settings: async `python` no-op steps in sandbox processes, telemetry on), Postgres with fsync on;
  measured by `RuntimeClient` in the driver (`start_run` + the pushed completion for W1; `start_runs` and
  a poll of the runs table every 10 ms for W2).
- DBOS Transact: `peers/dbos_app.py` in the DBOS venv, an async workflow of async no-op steps, system
  database in the same Postgres (fsync on), DBOS's default pool; measured inside that process, around
  `DBOS.start_workflow_async` + `handle.get_result()` (DBOS is a library: its process is its client).
- Restate: restate-server (its defaults: one node, replicated loglet with replication 1, RocksDB WAL fsync
  on) and `peers/restate_app.py` served by hypercorn (one worker, HTTP/2 cleartext), registered through the
  admin API; measured from the driver over the HTTP ingress (`POST /Bench/run`, which answers with the
  handler's result), one HTTP/1.1 connection per call in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
from peer_install import PeerUnavailable
from peer_report import Sample, sample

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from engine_bench import concurrent, timed_runs, worker_env, write_workflows  # noqa: E402
from stack import BenchServers, free_port, start_worker, stop_worker, wait_workflows  # noqa: E402

from worker.client import RuntimeClient  # noqa: E402

HERE = Path(__file__).resolve().parent
WARMUP_SEQUENTIAL = 3
WARMUP_CONCURRENT = 100


class AgentRuntime:
    name = "agentrt"

    def __init__(self, srv: BenchServers, client: RuntimeClient, url: str, steps: int,
                 env: dict[str, str] | None = None) -> None:
        self.srv, self.client, self.url, self.steps = srv, client, url, steps
        self.env = env or {}  # e.g. AGENTRT_PYTHON_ISOLATION=inline: steps in the worker, as the peers run theirs
        write_workflows(srv.workflows, steps)

    async def measure(self, sequential_runs: int, concurrent_runs: int, tag: str) -> Sample:
        worker: subprocess.Popen[bytes] | None = None
        with (self.srv.tmp / f"agentrt-{tag}.log").open("wb") as log:
            try:
                worker = start_worker({**worker_env(self.srv, self.url, concurrent_runs), **self.env}, log)
                await wait_workflows(self.client, {"seq-async"}, seconds=60)
                await asyncio.sleep(1.0)  # the worker's own start-up work settles (as engine_bench.py)
                await timed_runs(self.client, "seq-async", WARMUP_SEQUENTIAL)
                await concurrent(self.client, "seq-async", WARMUP_CONCURRENT, self.steps)
                walls, _ = await timed_runs(self.client, "seq-async", sequential_runs)
                conc = await concurrent(self.client, "seq-async", concurrent_runs, self.steps)
            finally:
                stop_worker(worker)
        if conc["failed"]:
            raise RuntimeError(f"AgentRuntime: {conc['failed']} of {concurrent_runs} concurrent runs failed")
        out = sample(walls, conc["wall_s"], concurrent_runs, self.steps)
        out["w2_db_clock_steps_per_s"] = conc["steps_per_s"]  # first creation to last finish, Postgres's clock
        return out


class Dbos:
    name = "dbos"

    def __init__(self, python: Path, db_url: str, tmp: Path, steps: int) -> None:
        self.python, self.db_url, self.tmp, self.steps = python, db_url, tmp, steps

    async def measure(self, sequential_runs: int, concurrent_runs: int, tag: str) -> Sample:
        with (self.tmp / f"dbos-{tag}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(self.python), str(HERE / "dbos_app.py"), "--db-url", self.db_url,
                "--sequential-runs", str(sequential_runs), "--concurrent-runs", str(concurrent_runs),
                "--steps", str(self.steps), "--warmup", str(WARMUP_SEQUENTIAL),
                "--warmup-concurrent", str(WARMUP_CONCURRENT),
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=HERE)
            try:
                stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=1800)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise PeerUnavailable("dbos_app.py did not finish within 30 minutes") from None
        if proc.returncode != 0:
            tail = (self.tmp / f"dbos-{tag}.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise PeerUnavailable(f"dbos_app.py exited {proc.returncode}: {' | '.join(tail)}")
        got = json.loads(stdout.decode().strip().splitlines()[-1])
        return sample(got["walls_s"], got["concurrent_s"], concurrent_runs, self.steps)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    stop_worker(proc, timeout=60)


class Restate:
    name = "restate"

    def __init__(self, python: Path, server: Path, tmp: Path, steps: int) -> None:
        self.python, self.server, self.tmp, self.steps = python, server, tmp, steps
        self.data = tmp / "restate-data"  # kept across rounds, as the other engines keep their databases
        ports: set[int] = set()
        while len(ports) < 4:  # four distinct ones (a port released by free_port() can come back)
            ports.add(free_port())
        self.ingress, self.admin, self.node, self.sdk = sorted(ports)

    def _start(self, tag: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], IO[bytes]]:
        log = (self.tmp / f"restate-{tag}.log").open("wb")
        app = subprocess.Popen([str(self.python), "-m", "hypercorn", "restate_app:app", "--bind",
                                f"127.0.0.1:{self.sdk}"], cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "BENCH_STEPS": str(self.steps)})
        env = {**os.environ,
               "RESTATE_DISABLE_TELEMETRY": "true",  # no usage report from this machine
               "RESTATE_LISTEN_MODE": "tcp",
               "RESTATE_LOG_FILTER": "warn",
               "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{self.ingress}",
               "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{self.admin}",
               "RESTATE_BIND_ADDRESS": f"127.0.0.1:{self.node}"}
        server = subprocess.Popen([str(self.server), "--no-logo", "--base-dir", str(self.data)], cwd=self.tmp,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        return app, server, log

    async def _ready(self, http: httpx.AsyncClient, app: subprocess.Popen[bytes],
                     server: subprocess.Popen[bytes]) -> None:
        """Both processes up, the deployment registered, and the ingress answering the handler."""
        deadline = time.monotonic() + 120
        admin = f"http://127.0.0.1:{self.admin}"
        while True:
            for proc, what in ((app, "hypercorn"), (server, "restate-server")):
                if proc.poll() is not None:
                    raise PeerUnavailable(f"{what} exited with {proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise PeerUnavailable("restate-server or hypercorn not ready within 120 s")
            try:
                if _port_open(self.sdk) and (await http.get(f"{admin}/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        res = await http.post(f"{admin}/deployments", json={"uri": f"http://127.0.0.1:{self.sdk}", "force": True})
        if res.status_code >= 300:
            raise PeerUnavailable(f"registering the deployment: HTTP {res.status_code} {res.text[:300]}")
        while True:
            try:
                if (await self._call(http)) == self.steps:
                    return
            except (httpx.TransportError, httpx.HTTPStatusError):
                pass
            if time.monotonic() > deadline:
                raise PeerUnavailable("the ingress did not answer Bench/run within 120 s")
            await asyncio.sleep(0.2)

    async def _call(self, http: httpx.AsyncClient) -> int:
        res = await http.post(f"http://127.0.0.1:{self.ingress}/Bench/run")
        res.raise_for_status()
        return int(res.json())

    async def measure(self, sequential_runs: int, concurrent_runs: int, tag: str) -> Sample:
        n = max(concurrent_runs, WARMUP_CONCURRENT)
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        app, server, log = self._start(tag)
        try:
            async with httpx.AsyncClient(timeout=300, limits=limits) as http:
                await self._ready(http, app, server)
                for _ in range(WARMUP_SEQUENTIAL):
                    await self._call(http)
                await asyncio.gather(*(self._call(http) for _ in range(WARMUP_CONCURRENT)))
                walls: list[float] = []
                for _ in range(sequential_runs):
                    t0 = time.perf_counter()
                    assert await self._call(http) == self.steps
                    walls.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                results = await asyncio.gather(*(self._call(http) for _ in range(concurrent_runs)))
                concurrent_s = time.perf_counter() - t0
                assert all(r == self.steps for r in results)
        finally:
            _stop(server)
            _stop(app)
            log.close()
        return sample(walls, concurrent_s, concurrent_runs, self.steps)
