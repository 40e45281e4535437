"""Chaos scenarios shared by tests/reliability (short versions) and bench/reliability.py (long ones).

A `ChaosStack` owns everything a scenario may break: its own Postgres and Redis (started from the
wheels), an idempotency-checking HTTP sink, and worker subprocesses (`python -m worker worker`).
Each scenario drives load, injects its fault, lets the system recover and returns a dict of figures
computed from Postgres (the source of truth) and from the sink (the observed side effects). Tests
assert on those figures; the bench runner prints them.

Nothing here is a pytest fixture, so the bench can use it without pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import statistics
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis as redis_sync

from tests.support.http_sink import HttpSink
from tests.support.runtime import http_chain
from tests.support.services import WorkerProc, WorkerProcs, create_migrated_database, worker_environment
from worker.bus.streams import WORK_GROUP, Keys
from worker.client import RuntimeClient
from worker.config import Settings
from worker.devstack import EmbeddedPostgres, EmbeddedRedis

T = TypeVar("T")
TERMINAL = ("completed", "failed", "cancelled")


# -- small helpers -------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (0 for fewer than two)."""
    if len(points) < 2:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


async def retrying(what: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Call `what` until it does not raise (the store may be restarting); re-raise after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await what()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1) -> float:
    """Wait until `check()` is true; returns the seconds it took. AssertionError on timeout."""
    t0 = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - t0
        except Exception:
            pass
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)


# -- the stack -----------------------------------------------------------------------------------
@dataclass
class ChaosStack:
    """Own Postgres + Redis + sink + worker subprocesses; see `chaos_stack`."""

    root: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    settings: Settings
    sink: HttpSink
    procs: WorkerProcs
    client: RuntimeClient
    worker_ids: dict[str, str] = field(default_factory=dict)  # name -> AGENTRT_WORKER_ID
    extra_env: dict[str, str] = field(default_factory=dict)
    _n: int = 0

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.redis_prefix)

    @property
    def workflows(self) -> Path:
        return self.settings.workflows_dir

    def write(self, filename: str, text: str) -> Path:
        path = self.workflows / filename
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def start_worker(self, name: str | None = None, extra_env: dict[str, str] | None = None) -> WorkerProc:
        self._n += 1
        name = name or f"w{self._n}"
        worker_id = f"chaos-{name}-{uuid.uuid4().hex[:6]}"
        env = {**self.extra_env, **(extra_env or {}), "AGENTRT_WORKER_ID": worker_id}
        proc = self.procs.start(extra_env=env, name=name)
        self.worker_ids[name] = worker_id
        return proc

    def live_workers(self) -> list[WorkerProc]:
        return [p for p in self.procs.procs if p.alive()]

    def worker_id(self, proc: WorkerProc) -> str:
        return self.worker_ids[proc.name]

    async def wait_ready(self, proc: WorkerProc, timeout: float = 60.0) -> None:
        await asyncio.to_thread(proc.wait_for_log, f"worker {self.worker_id(proc)} started", timeout)

    async def wait_workflows(self, names: set[str], timeout: float = 30.0) -> None:
        async def loaded() -> bool:
            active = {w.name for w in await self.client.list_workflows() if w.status == "active"}
            return names <= active

        await until(loaded, timeout, f"workflows {sorted(names)} active")

    def redis_client(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.redis.url(), socket_timeout=10)

    async def reconnect(self) -> None:
        """A new client (after Postgres restarts, the old pool's connections are dead)."""
        with contextlib.suppress(Exception):
            await self.client.close()
        self.client = await retrying(lambda: RuntimeClient.connect(self.settings), 60)


@asynccontextmanager
async def chaos_stack(*, lease_ttl: float = 3.0, redis_appendonly: bool = False, redis_save: bool = False,
                      pg_fsync: bool = False, allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                      log_level: str = "INFO", concurrency: int = 200,
                      root: Path | None = None) -> AsyncIterator[ChaosStack]:
    """Start a fresh Postgres, Redis and sink; yield a stack; kill workers and stop servers on exit."""
    own_root = root is None
    root = root or Path(tempfile.mkdtemp(prefix="agentrt-chaos-"))
    root.chmod(0o755)  # Postgres runs as an unprivileged user when we are root
    pg = EmbeddedPostgres(root / "pg", fsync=pg_fsync)
    rd = EmbeddedRedis(root / "redis", appendonly=redis_appendonly, save=redis_save)
    sink = HttpSink().start()
    procs: WorkerProcs | None = None
    client: RuntimeClient | None = None
    try:
        await asyncio.to_thread(pg.start)
        await asyncio.to_thread(rd.start)
        url = await asyncio.to_thread(create_migrated_database, pg, "agentrt")
        workflows = root / "workflows"
        workflows.mkdir()
        settings = Settings(
            database_url=url, redis_url=rd.url(), redis_prefix=f"c-{uuid.uuid4().hex[:6]}",
            workflows_dir=workflows, lease_ttl=lease_ttl, heartbeat_interval=min(0.5, lease_ttl / 4),
            reconcile_interval=0.5, redeliver_after=lease_ttl, http_allowed_hosts=allowed_hosts,
            concurrency=concurrency, log_level=log_level,
        )
        env = worker_environment(settings)
        env["AGENTRT_LOG_LEVEL"] = log_level
        env["AGENTRT_CONCURRENCY"] = str(concurrency)
        logs = root / "logs"
        logs.mkdir()
        procs = WorkerProcs(env=env, log_dir=logs)
        client = await RuntimeClient.connect(settings)
        stack = ChaosStack(root, pg, rd, settings, sink, procs, client)
        yield stack
        client = stack.client
    finally:
        if procs is not None:
            procs.kill_all()
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10)
        sink.stop()
        for server in (rd, pg):
            try:
                await asyncio.to_thread(server.stop, 15)
            except Exception:
                server.kill()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


# -- checks from the source of truth ------------------------------------------------------------
@dataclass
class Audit:
    """What Postgres and the sink say about a set of runs."""

    started: int
    by_status: dict[str, int]
    steps_completed_twice: int  # (run, step) pairs with more than one step.completed event
    runs_missing_steps: int  # completed runs with fewer step.completed steps than expected
    distinct_effects: int
    raw_requests: int
    duplicate_requests: int
    unexpected_keys: int  # sink keys that belong to no run of this set
    started_before_predecessor: int = 0  # chains: s<i> started before s<i-1>'s completion was committed

    @property
    def completed(self) -> int:
        return self.by_status.get("completed", 0)

    def figures(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}runs_started": self.started, f"{prefix}runs_completed": self.completed,
                f"{prefix}completed_ratio": self.completed / self.started if self.started else float("nan"),
                f"{prefix}steps_completed_twice": self.steps_completed_twice,
                f"{prefix}runs_missing_steps": self.runs_missing_steps,
                f"{prefix}started_before_predecessor": self.started_before_predecessor,
                f"{prefix}distinct_effects": self.distinct_effects, f"{prefix}raw_requests": self.raw_requests,
                f"{prefix}duplicate_requests": self.duplicate_requests,
                f"{prefix}unexpected_keys": self.unexpected_keys}


async def audit_runs(stack: ChaosStack, workflow: str, steps: int, path_prefix: str = "/step") -> Audit:
    pool = stack.client.pool
    rows = await retrying(lambda: pool.fetch("SELECT run_id::text, status FROM runs WHERE workflow = $1", workflow))
    ids = {r["run_id"] for r in rows}
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    twice = await retrying(lambda: pool.fetchval(
        """SELECT count(*) FROM (SELECT e.run_id, e.step_id FROM events e JOIN runs r USING (run_id)
           WHERE r.workflow = $1 AND e.type = 'step.completed' GROUP BY 1, 2 HAVING count(*) > 1) d""", workflow))
    missing = await retrying(lambda: pool.fetchval(
        """SELECT count(*) FROM (SELECT r.run_id FROM runs r LEFT JOIN events e
             ON e.run_id = r.run_id AND e.type = 'step.completed'
           WHERE r.workflow = $1 AND r.status = 'completed'
           GROUP BY r.run_id HAVING count(DISTINCT e.step_id) < $2) d""", workflow, steps))
    early = await retrying(lambda: pool.fetchval(
        """SELECT count(*) FROM events s JOIN runs r USING (run_id)
           WHERE r.workflow = $1 AND s.type = 'step.started' AND s.step_id ~ '^s[0-9]+$' AND s.step_id <> 's1'
             AND NOT EXISTS (SELECT 1 FROM events c WHERE c.run_id = s.run_id AND c.type = 'step.completed'
                               AND c.step_id = 's' || (substring(s.step_id FROM 2)::int - 1) AND c.seq < s.seq)""",
        workflow))
    reqs = [r for r in stack.sink.snapshot() if r.path.startswith(path_prefix)]
    keys = [r.idempotency_key for r in reqs]
    distinct = len({k for k in keys if k is not None}) + sum(1 for k in keys if k is None)
    unexpected = sum(1 for k in {k for k in keys if k} if k.split(":")[1] not in ids)
    return Audit(len(rows), by_status, int(twice), int(missing), distinct, len(reqs), len(reqs) - distinct,
                 unexpected, int(early))


async def wait_all_terminal(stack: ChaosStack, workflow: str, timeout: float) -> float:
    async def done() -> bool:
        n = await stack.client.pool.fetchval(
            "SELECT count(*) FROM runs WHERE workflow = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
            workflow)
        return n == 0

    return await until(done, timeout, f"every {workflow} run finished", interval=0.25)


def xpending(stack: ChaosStack) -> int:
    try:
        info = stack.redis_client().xpending(stack.keys.work, WORK_GROUP)
    except redis_sync.ResponseError:
        return 0  # no stream or no group: nothing pending
    return int(info["pending"])


# -- closed-loop load ----------------------------------------------------------------------------
class Load:
    """Keeps `concurrency` runs of `workflow` in flight until `stop()`; tolerant of store outages."""

    def __init__(self, stack: ChaosStack, workflow: str, inputs: dict[str, Any], concurrency: int) -> None:
        self.stack = stack
        self.workflow = workflow
        self.inputs = inputs
        self.concurrency = concurrency
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def start(self) -> Load:
        self._task = asyncio.create_task(self._loop())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                active = await self.stack.client.pool.fetchval(
                    "SELECT count(*) FROM runs WHERE workflow = $1"
                    " AND status NOT IN ('completed', 'failed', 'cancelled')",
                    self.workflow)
                missing = self.concurrency - int(active)
                if missing > 0:
                    await self.stack.client.start_runs(self.workflow, [self.inputs] * missing)
            except Exception:
                self.errors += 1
                with contextlib.suppress(Exception):
                    await self.stack.reconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.25)


# -- scenario: kill -9 workers at random moments -------------------------------------------------
async def worker_crashes(stack: ChaosStack, *, kills: int, workers: int = 3, concurrency: int = 50,
                         steps: int = 10, step_delay: float = 0.3, kill_gap: tuple[float, float] = (0.5, 2.0),
                         seed: int | None = None, drain_timeout: float = 180.0) -> dict[str, float]:
    """Kill a random worker `kills` times while `concurrency` `steps`-step runs are kept in flight."""
    rng = random.Random(seed)
    for i in range(1, steps + 1):
        stack.sink.set_delay(f"/step{i}", step_delay)
    stack.write("chain.yaml", http_chain(steps))
    procs = [stack.start_worker() for _ in range(workers)]
    for p in procs:
        await stack.wait_ready(p)
    await stack.wait_workflows({"chain"})
    load = Load(stack, "chain", {"sink": stack.sink.url}, concurrency).start()
    recoveries: list[float] = []
    pending: list[asyncio.Task[float | None]] = []

    async def recovery(held: dict[str, int], killed_at: float) -> float | None:
        if not held:
            return None

        async def moved() -> bool:
            rows = await stack.client.pool.fetch(
                "SELECT run_id::text, next_seq, status FROM runs WHERE run_id = ANY($1::uuid[])", list(held))
            return all(r["next_seq"] > held[r["run_id"]] or r["status"] in TERMINAL for r in rows)

        await until(moved, 120, "runs of a killed worker resumed", interval=0.05)
        return time.monotonic() - killed_at

    await asyncio.sleep(rng.uniform(*kill_gap) + 1.0)
    t0 = time.monotonic()
    for _ in range(kills):
        # kill a worker that finished starting (and so may hold runs), and only while another one is
        # ready to take over: recovery then measures takeover, not a cluster that is down altogether
        def ready() -> list[WorkerProc]:
            return [p for p in stack.live_workers() if f"worker {stack.worker_id(p)} started" in p.log_text()]

        await until(lambda: _async(len(ready()) >= 2), 120, "two ready workers", interval=0.05)
        victim = rng.choice(ready())
        victim.kill()
        killed_at = time.monotonic()
        rows = await stack.client.pool.fetch(
            """SELECT run_id::text, next_seq FROM runs WHERE lease_owner = $1
               AND status NOT IN ('completed', 'failed', 'cancelled')""", stack.worker_id(victim))
        pending.append(asyncio.create_task(recovery({r["run_id"]: r["next_seq"] for r in rows}, killed_at)))
        stack.start_worker()
        await asyncio.sleep(rng.uniform(*kill_gap))
    kill_phase = time.monotonic() - t0
    await load.stop()
    drain = await wait_all_terminal(stack, "chain", drain_timeout)
    for task in pending:
        value = await task
        if value is not None:
            recoveries.append(value)
    audit = await audit_runs(stack, "chain", steps)
    figures: dict[str, float] = {
        "kills": kills, "workers": workers, "concurrency": concurrency, "steps": steps,
        "kill_phase_s": kill_phase, "drain_s": drain,
        **audit.figures(),
        "expected_effects": audit.completed * steps,
        "kills_of_workers_holding_runs": len(recoveries),
        "recovery_p50_s": pct(recoveries, 50), "recovery_p99_s": pct(recoveries, 99),
        "recovery_max_s": max(recoveries) if recoveries else float("nan"),
        "workers_alive_at_end": len(stack.live_workers()),
        "group_consumers": group_consumers(stack),
    }
    return figures


def group_consumers(stack: ChaosStack) -> int:
    """Consumers registered in the work group (a crashed worker's consumer is never deleted)."""
    try:
        return len(stack.redis_client().xinfo_consumers(stack.keys.work, WORK_GROUP))
    except redis_sync.ResponseError:
        return 0


# -- scenario: zombies (SIGSTOP past the lease, SIGCONT after a takeover) -------------------------
async def zombies(stack: ChaosStack, *, rounds: int = 1, runs_per_round: int = 5,
                  slow: float = 2.0) -> dict[str, float]:
    stack.sink.set_delay("/step2", slow)
    stack.write("chain.yaml", http_chain(3))
    attempted = rejected = leaked = 0
    for rnd in range(rounds):
        zombie = stack.start_worker(f"zombie{rnd}")
        await stack.wait_ready(zombie)
        await stack.wait_workflows({"chain"})
        before_n = stack.sink.count("/step2")
        ids = [await stack.client.start_run("chain", {"sink": stack.sink.url}) for _ in range(runs_per_round)]
        want = before_n + runs_per_round
        ok = await stack.sink.wait_for_async(lambda s, want=want: s.count("/step2") >= want, 30)
        assert ok, "the zombie never called step2 for every run"
        zombie.sigstop()
        heir = stack.start_worker(f"heir{rnd}")
        await stack.wait_ready(heir)
        for run_id in ids:
            summary = await stack.client.wait_for_run(run_id, timeout=60)
            assert summary.status.value == "completed", summary.error
        seqs = {r: [e.seq for e in (await stack.client.get_run(r)).events] for r in ids}
        zombie.sigcont()
        attempted += len(ids)

        async def all_refused(zombie: WorkerProc = zombie, ids: list[str] = ids) -> bool:
            text = zombie.log_text()
            return all(f"run {r}: lease lost" in text for r in ids)

        with contextlib.suppress(AssertionError):
            await until(all_refused, 20, "the zombie noticed every lost lease")
        await asyncio.sleep(1.0)
        text = zombie.log_text()
        for r in ids:
            after = [e.seq for e in (await stack.client.get_run(r)).events]
            if after == seqs[r] and f"run {r}: lease lost" in text:
                rejected += 1
            if after != seqs[r]:
                leaked += 1
        alive = zombie.alive() and heir.alive()
        zombie.kill()
        heir.kill()
        assert alive, "a worker died during the zombie round"
    audit = await audit_runs(stack, "chain", 3)
    return {"late_commits_attempted": attempted, "late_commits_rejected": rejected,
            "rejected_ratio": rejected / attempted if attempted else float("nan"),
            "late_commits_landed": leaked, **audit.figures()}


# -- scenario: Redis failures --------------------------------------------------------------------
NAP = """
name: nap
inputs: {sink: {type: string}}
steps:
  - {id: before, uses: http, with: {url: "${{ inputs.sink }}/nap/before"}}
  - {id: z, uses: sleep, with: {duration: 1s}}
  - {id: after, uses: http, with: {url: "${{ inputs.sink }}/nap/after"}}
"""


async def redis_fault(stack: ChaosStack, mode: str, *, outage: float = 5.0, runs: int = 10,
                      workers: int = 2) -> dict[str, float]:
    """`mode`: kill9 (AOF as configured), old-snapshot (restart from an RDB saved early), outage (stop,
    wait `outage` s, start). Runs started before and during the fault must all complete."""
    stack.write("nap.yaml", NAP)
    procs = [stack.start_worker() for _ in range(workers)]
    for p in procs:
        await stack.wait_ready(p)
    await stack.wait_workflows({"nap"})
    r = stack.redis_client()
    snapshot: Path | None = None
    if mode == "old-snapshot":
        # a few runs go through first, so that the snapshot holds a stream, a group and old entries
        early = [await stack.client.start_run("nap", {"sink": stack.sink.url}) for _ in range(3)]
        for run_id in early:
            await stack.client.wait_for_run(run_id, timeout=60)
        r.save()
        snapshot = stack.root / "dump.rdb.early"
        shutil.copy(stack.redis.data_dir / "dump.rdb", snapshot)
    before = [await stack.client.start_run("nap", {"sink": stack.sink.url}) for _ in range(runs)]
    ok = await stack.sink.wait_for_async(lambda s: s.count("/nap/before") >= len(before), 60)
    assert ok, "runs did not start before the fault"
    during: list[str] = []
    if mode == "outage":
        await asyncio.to_thread(stack.redis.stop)
    else:
        await asyncio.to_thread(stack.redis.kill)
    down_at = time.monotonic()
    # work arrives while Redis is down: only Postgres knows about these runs
    for _ in range(runs):
        during.append(await stack.client.start_run("nap", {"sink": stack.sink.url}))
    await asyncio.sleep(max(0.0, (outage if mode == "outage" else 1.0) - (time.monotonic() - down_at)))
    if snapshot is not None:
        for name in ("dump.rdb", "appendonly.aof"):
            with contextlib.suppress(FileNotFoundError):
                (stack.redis.data_dir / name).unlink()
        shutil.rmtree(stack.redis.data_dir / "appendonlydir", ignore_errors=True)
        shutil.copy(snapshot, stack.redis.data_dir / "dump.rdb")
    await asyncio.to_thread(stack.redis.start)
    up_at = time.monotonic()

    async def flowing() -> bool:
        n = await stack.client.pool.fetchval(
            """SELECT count(DISTINCT run_id) FROM events WHERE run_id = ANY($1::uuid[])
               AND type = 'step.started'""", during)
        return n == len(during)

    restore = await until(flowing, 120, "work started while Redis was down picked up", interval=0.05)
    drain = await wait_all_terminal(stack, "nap", 120)
    pending_left = -1
    with contextlib.suppress(AssertionError):
        await until(lambda: _async(xpending(stack) == 0), 30, "XPENDING empty")
    pending_left = xpending(stack)
    audit = await audit_runs(stack, "nap", 3, path_prefix="/nap/")
    alive = sum(1 for p in procs if p.alive())
    return {"restore_s": restore, "drain_after_up_s": drain + restore, "downtime_s": up_at - down_at,
            "workers_alive": alive, "workers": workers, "xpending_after": pending_left,
            "expected_effects": audit.started * 2, **audit.figures()}


async def _async(value: T) -> T:
    return value


# -- scenario: Postgres restarts under load ------------------------------------------------------
async def postgres_restarts(stack: ChaosStack, *, restarts: int, interval: tuple[float, float] = (5, 20),
                            downtime: tuple[float, float] = (0, 5), concurrency: int = 20, workers: int = 2,
                            steps: int = 10, step_delay: float = 0.1, seed: int | None = None) -> dict[str, float]:
    rng = random.Random(seed)
    for i in range(1, steps + 1):
        stack.sink.set_delay(f"/step{i}", step_delay)
    stack.write("chain.yaml", http_chain(steps))
    procs = [stack.start_worker() for _ in range(workers)]
    for p in procs:
        await stack.wait_ready(p)
    await stack.wait_workflows({"chain"})
    load = Load(stack, "chain", {"sink": stack.sink.url}, concurrency).start()
    downs: list[float] = []
    for i in range(restarts):
        await asyncio.sleep(rng.uniform(*interval))
        down = rng.uniform(*downtime)
        downs.append(down)
        if i % 2 == 1:  # every other one is a crash (kill -9: crash recovery), not a fast shutdown
            await asyncio.to_thread(stack.pg.kill)
            await asyncio.sleep(down)
            await asyncio.to_thread(stack.pg.start)
        else:
            await asyncio.to_thread(stack.pg.restart, down)
    await asyncio.sleep(2.0)
    await load.stop()
    await stack.reconnect()
    drain = await wait_all_terminal(stack, "chain", 180)
    audit = await audit_runs(stack, "chain", steps)
    return {"restarts": restarts, "of_which_kill9": restarts // 2, "downtime_total_s": sum(downs), "drain_s": drain,
            "workers_alive": sum(1 for p in procs if p.alive()), "workers": workers,
            "expected_effects": audit.completed * steps, **audit.figures()}


# -- scenario: poison work -----------------------------------------------------------------------
POISON_TASKS = '''
def boom():
    raise RuntimeError("poison: always fails")
'''


def poison_workflows(stack: ChaosStack, attempts: int) -> None:
    stack.write("poison_tasks.py", POISON_TASKS)
    retry = f"{{max_attempts: {attempts}, initial_interval: 200ms, backoff: 2.0, max_interval: 1s}}"
    stack.write("poison.yaml", f"""
        name: poison-fail
        inputs: {{sink: {{type: string}}}}
        steps:
          - id: bad
            uses: http
            with: {{method: POST, url: "${{{{ inputs.sink }}}}/poison/fail"}}
            retry: {retry}
          - {{id: never, uses: http, with: {{url: "${{{{ inputs.sink }}}}/poison/never"}}}}
    """)
    stack.write("poison-slow.yaml", f"""
        name: poison-timeout
        inputs: {{sink: {{type: string}}}}
        steps:
          - id: slow
            uses: http
            timeout: 300ms
            with: {{url: "${{{{ inputs.sink }}}}/poison/slow"}}
            retry: {retry}
          - {{id: never, uses: http, with: {{url: "${{{{ inputs.sink }}}}/poison/never"}}}}
    """)
    stack.write("poison-py.yaml", f"""
        name: poison-python
        steps:
          - id: boom
            uses: python
            with: {{function: "poison_tasks:boom"}}
            retry: {retry}
          - {{id: never, uses: set, with: {{x: 1}}}}
    """)


async def poison(stack: ChaosStack, *, runs: int = 3, attempts: int = 3, idle: float = 3.0) -> dict[str, float]:
    stack.sink.script("/poison/fail", [(500, {}, "always broken")] * (runs * attempts * 3))
    stack.sink.set_delay("/poison/slow", 3.0)
    poison_workflows(stack, attempts)
    procs = [stack.start_worker() for _ in range(2)]
    for p in procs:
        await stack.wait_ready(p)
    names = ("poison-fail", "poison-timeout", "poison-python")
    await stack.wait_workflows(set(names))
    t0 = time.monotonic()
    ids: dict[str, list[str]] = {}
    for name in names:
        inputs = {} if name == "poison-python" else {"sink": stack.sink.url}
        ids[name] = [await stack.client.start_run(name, inputs) for _ in range(runs)]
    statuses: list[str] = []
    for name in names:
        for run_id in ids[name]:
            statuses.append((await stack.client.wait_for_run(run_id, timeout=90)).status.value)
    elapsed = time.monotonic() - t0
    all_ids = [r for v in ids.values() for r in v]
    rows = await stack.client.pool.fetch(
        """SELECT run_id::text, step_id, ts FROM events WHERE run_id = ANY($1::uuid[]) AND type = 'step.started'
           ORDER BY run_id, seq""", all_ids)
    per_run: dict[str, list[float]] = {}
    started_never = 0
    for row in rows:
        if row["step_id"] == "never":
            started_never += 1
            continue
        per_run.setdefault(row["run_id"], []).append(row["ts"].timestamp())
    attempts_seen = [len(v) for v in per_run.values()]
    gaps = [b - a for v in per_run.values() for a, b in itertools.pairwise(v)]
    requests_before = stack.sink.count("/poison/fail") + stack.sink.count("/poison/slow")
    events_before = await stack.client.pool.fetchval("SELECT count(*) FROM events")
    await asyncio.sleep(idle)  # a hot loop would keep adding attempts now
    requests_after = stack.sink.count("/poison/fail") + stack.sink.count("/poison/slow")
    events_after = await stack.client.pool.fetchval("SELECT count(*) FROM events")
    pending_s = float("nan")
    with contextlib.suppress(AssertionError):
        pending_s = await until(lambda: _async(xpending(stack) == 0), 30, "XPENDING empty")
    return {
        "runs": len(all_ids), "runs_failed": statuses.count("failed"), "max_attempts": attempts,
        "attempts_min": min(attempts_seen, default=0), "attempts_max": max(attempts_seen, default=0),
        "min_gap_between_attempts_s": min(gaps, default=float("nan")),
        "sink_requests": stack.sink.count("/poison/fail") + stack.sink.count("/poison/slow"),
        "expected_sink_requests": 2 * runs * attempts, "never_started": started_never,
        "never_requests": stack.sink.count("/poison/never"),
        "elapsed_s": elapsed, "requests_while_idle": requests_after - requests_before,
        "events_while_idle": int(events_after - events_before), "xpending_after": xpending(stack),
        "xpending_drain_s": pending_s, "workers_alive": sum(1 for p in procs if p.alive()),
    }


# -- scenario: malformed workflow files, hot-reloaded -------------------------------------------
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bad_workflows"

GOOD_VICTIM = """
name: victim
inputs: {sink: {type: string}}
steps:
  - {id: ping, uses: http, with: {url: "${{ inputs.sink }}/victim/good"}}
output: good
"""


# Files the reload storm would leave out because they broke the watcher (a regression guard: keep empty)
# (tests/reliability/test_bad_files.py also tests them on their own).
KNOWN_BREAKERS: frozenset[str] = frozenset()  # files that broke the worker before their fix: none now


def install_bad_files(stack: ChaosStack, *, big_mb: int = 50, exclude: frozenset[str] = KNOWN_BREAKERS) -> list[str]:
    """Copy the corpus into the workflows dir (plus generated files); returns the file names written."""
    names: list[str] = []
    for src in sorted(CORPUS.iterdir()):
        if src.name.startswith(".") or src.suffix not in (".yaml", ".yml") or src.name in exclude:
            continue
        data = src.read_bytes().replace(b"SINK_URL", stack.sink.url.encode())
        dst = stack.workflows / src.name
        dst.write_bytes(data)
        names.append(src.name)
    # a 50 MB file: one valid-looking workflow followed by megabytes of comment lines
    big = stack.workflows / "zz-huge.yaml"
    with big.open("wb") as f:
        f.write(b"name: huge\nsteps:\n  - {id: a, uses: http, with: {url: \"" + stack.sink.url.encode()
                + b"/evil/huge\"}}\n")
        line = b"# " + b"x" * 1021 + b"\n"
        for _ in range(big_mb * 1024):
            f.write(line)
    names.append(big.name)
    # a symlink to a valid workflow outside the directory
    outside = stack.root / "outside.yaml"
    outside.write_text("name: outside\nsteps:\n  - {id: a, uses: http, with: {url: "
                       f'"{stack.sink.url}/evil/outside"}}}}\n')
    link = stack.workflows / "zz-symlink.yaml"
    link.symlink_to(outside)
    names.append(link.name)
    # invalid UTF-8 in the middle of an otherwise valid workflow
    (stack.workflows / "zz-latin1.yaml").write_bytes(
        b"name: latin\ndescription: caf\xe9 \xff\xfe\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    names.append("zz-latin1.yaml")
    # the same name as a good, loaded workflow: the previous version must stay active
    (stack.workflows / "victim.yaml").write_text(
        "name: victim\ninputs: {sink: {type: string}}\nsteps:\n  - {id: ping, uses: http, with: {url: "
        "\"${{ inputs.sink }}/evil/victim\"}\n    needs: [ping]\n")
    names.append("victim.yaml")
    return names


async def bad_files(stack: ChaosStack, *, big_mb: int = 50, timeout: float = 60.0) -> dict[str, Any]:
    stack.write("victim.yaml", GOOD_VICTIM)
    worker = stack.start_worker("reload")
    await stack.wait_ready(worker)
    await stack.wait_workflows({"victim"})
    good = (await stack.client.start_run("victim", {"sink": stack.sink.url}))
    assert (await stack.client.wait_for_run(good, timeout=30)).status.value == "completed"
    good_hash = next(w.def_hash for w in await stack.client.list_workflows() if w.name == "victim")
    rss_before = rss_bytes(worker.pid)
    peak = rss_before
    t0 = time.monotonic()
    names = await asyncio.to_thread(install_bad_files, stack, big_mb=big_mb)
    reported: dict[str, Any] = {}

    async def all_reported() -> bool:
        nonlocal peak
        peak = max(peak, rss_bytes(worker.pid))
        infos = {Path(w.path).name: w for w in await stack.client.list_workflows()}
        reported.clear()
        reported.update({n: infos.get(n) for n in names})
        return all(i is not None and i.status == "invalid" for i in reported.values())

    with contextlib.suppress(AssertionError):
        await until(all_reported, timeout, "every bad file reported", interval=0.2)
    report_s = time.monotonic() - t0
    # after the reload storm: the good version still runs, nothing from the bad files ran
    again = await stack.client.start_run("victim", {"sink": stack.sink.url})
    again_summary = await stack.client.wait_for_run(again, timeout=30)
    again_hash = await stack.client.pool.fetchval("SELECT def_hash FROM runs WHERE run_id = $1", again)
    names_started = await stack.client.pool.fetch("SELECT DISTINCT workflow FROM runs")
    peak = max(peak, rss_bytes(worker.pid))
    return {
        "files": names, "reported": reported, "report_s": report_s,
        "victim_status": again_summary.status.value, "victim_hash_kept": again_hash == good_hash,
        "workflows_with_runs": sorted(r["workflow"] for r in names_started),
        "evil_requests": sum(1 for r in stack.sink.snapshot() if r.path.startswith("/evil")),
        "rss_before_mb": rss_before / 2**20, "rss_peak_mb": peak / 2**20, "rss_after_mb": rss_bytes(worker.pid) / 2**20,
        "worker_alive": worker.alive(), "log": worker.log_text(),
    }


# -- scenario: soak ------------------------------------------------------------------------------
async def soak(stack: ChaosStack, *, rate: float, minutes: float, kill_every: float, workers: int = 3,
               steps: int = 5, sample_every: float = 5.0, seed: int | None = None) -> dict[str, float]:
    """Start `rate` runs/s for `minutes`, killing a (non-steady) worker every `kill_every` s."""
    rng = random.Random(seed)
    stack.write("chain.yaml", http_chain(steps))
    steady = stack.start_worker("steady")
    others = [stack.start_worker() for _ in range(workers - 1)]
    for p in [steady, *others]:
        await stack.wait_ready(p)
    await stack.wait_workflows({"chain"})
    r = stack.redis_client()
    pool = stack.client.pool
    db_start = int(await pool.fetchval("SELECT pg_database_size(current_database())"))
    rss: list[tuple[float, float]] = []
    redis_mem: list[float] = []
    work_len: list[int] = []
    events_len: list[int] = []
    kills = 0
    t0 = time.monotonic()
    duration = minutes * 60
    next_kill = t0 + kill_every
    next_sample = t0
    credit = 0.0
    last = t0
    while (now := time.monotonic()) - t0 < duration:
        credit += (now - last) * rate
        last = now
        if credit >= 1:
            n = int(credit)
            credit -= n
            await stack.client.start_runs("chain", [{"sink": stack.sink.url}] * n)
        if now >= next_kill:
            victims = [p for p in stack.live_workers() if p is not steady]
            if victims:
                rng.choice(victims).kill()
                kills += 1
                stack.start_worker()
            next_kill = now + kill_every
        if now >= next_sample:
            rss.append(((now - t0) / 60, rss_bytes(steady.pid) / 2**20))
            redis_mem.append(int(r.info("memory")["used_memory"]) / 2**20)
            work_len.append(int(r.xlen(stack.keys.work)))
            events_len.append(int(r.xlen(stack.keys.events)))
            next_sample = now + sample_every
        await asyncio.sleep(0.05)
    submitted_s = time.monotonic() - t0
    drain = await wait_all_terminal(stack, "chain", 300)
    total_s = time.monotonic() - t0
    audit = await audit_runs(stack, "chain", steps)
    db_end = int(await pool.fetchval("SELECT pg_database_size(current_database())"))
    lat = await pool.fetchrow(
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99, count(*) AS n
           FROM (SELECT extract(epoch FROM c.ts - s.ts) AS d FROM events s JOIN events c
                   ON c.run_id = s.run_id AND c.step_id = s.step_id AND c.attempt = s.attempt
                  AND c.type = 'step.completed' WHERE s.type = 'step.started') x""")
    span = await pool.fetchval("SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM runs")
    half = len(rss) // 2
    return {
        "rate_target_runs_s": rate, "minutes": minutes, "kills": kills, **audit.figures(),
        "expected_effects": audit.completed * steps,
        "throughput_runs_s": audit.completed / float(span), "throughput_steps_s": audit.completed * steps / float(span),
        "submit_phase_s": submitted_s, "drain_s": drain, "total_s": total_s,
        "step_latency_p50_ms": float(lat["p50"]) * 1000, "step_latency_p99_ms": float(lat["p99"]) * 1000,
        "steady_rss_start_mb": rss[0][1] if rss else float("nan"),
        "steady_rss_end_mb": rss[-1][1] if rss else float("nan"),
        "steady_rss_slope_mb_per_min": slope(rss),
        "steady_rss_slope_2nd_half_mb_per_min": slope(rss[half:]),
        "redis_used_memory_max_mb": max(redis_mem, default=float("nan")),
        "redis_used_memory_end_mb": redis_mem[-1] if redis_mem else float("nan"),
        "work_stream_len_max": max(work_len, default=0), "events_stream_len_max": max(events_len, default=0),
        "work_stream_len_end": int(r.xlen(stack.keys.work)), "events_stream_len_end": int(r.xlen(stack.keys.events)),
        "pg_bytes_per_run": (db_end - db_start) / audit.started if audit.started else float("nan"),
        "steady_alive": steady.alive(),
    }


# -- canaries for SSRF tests ---------------------------------------------------------------------
class Canary:
    """A TCP listener on an internal address that records every connection (it should get none)."""

    def __init__(self, host: str, port: int = 0) -> None:
        import socket
        import threading

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.hits: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"canary-{host}")
        self._thread.start()

    def _serve(self) -> None:

        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.hits.append(conn.recv(4096))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nleaked")
                except OSError:
                    self.hits.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
