"""WorkerService: the I/O shell around the engine.

Loops: consume the work streams (one per priority, read weighted fair: worker/bus/intake.py), heartbeat (renew
leases, notice signals and lost leases), reconcile (re-derive work from Postgres, reclaim dead consumers'
entries, admit concurrency-key queues that could move), listen for signals, watch the
workflow files, and fire schedule ticks (worker/schedules/loop.py). Every loop survives Postgres and
Redis outages: it logs, backs off and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from worker import faults
from worker.boundary import load_checks
from worker.budgets.check import BudgetCheck
from worker.bus.connect import redis_client, redis_keys
from worker.bus.intake import Entry, WorkIntake
from worker.bus.publisher import Publisher
from worker.bus.streams import WORK_GROUP
from worker.config import Settings
from worker.definitions.expressions import set_budget as set_expression_budget
from worker.engine.actor import RunActor
from worker.engine.definitions_sync import DefinitionsSync
from worker.engine.liveness import Liveness, session_url
from worker.engine.upkeep import Upkeep
from worker.history import partitions as history_partitions
from worker.limits.gate import Limiter
from worker.notify.dispatcher import Notifier
from worker.schedules.loop import SchedulerLoop
from worker.secrets import SecretProvider, build_secret_provider
from worker.secrets.identity import forget_identity
from worker.secrets.transit import PayloadCipher, build_cipher
from worker.steps.base import StepExecutor
from worker.steps.registry import build_executors, close_executors, start_executors
from worker.store import runs as store
from worker.store.definitions import DefinitionCache
from worker.store.migrate import migrate_conn
from worker.store.pool import create_pool
from worker.store.writer import EventWriter
from worker.telemetry import Telemetry, build_telemetry

logger = logging.getLogger(__name__)

STOP_STEP_TIMEOUT = 10.0
"""Seconds one part of stopping (the writer, the notifier, the pool...) may take before it is passed over."""

_T = TypeVar("_T")


class WorkerService(Upkeep):
    def __init__(self, settings: Settings, *, watch: bool = True) -> None:
        self.settings = settings
        self.keys = redis_keys(settings)
        self.watch = watch
        self.actors: dict[str, RunActor] = {}
        self._actor_tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._capacity = asyncio.Event()
        self._full_reconcile = asyncio.Event()
        self._full_reconcile.set()  # on start: anything unleased and due is (re)enqueued at once
        self._last_consumer_gc = 0.0
        self._last_repair = 0.0
        self.pool: asyncpg.Pool
        self.redis: aioredis.Redis
        self.writer: EventWriter
        self.publisher: Publisher
        self.definitions: DefinitionCache
        self.notices: Notifier
        self.executors: dict[str, StepExecutor] = {}
        self.sync: DefinitionsSync | None = None
        self.limiter: Limiter | None = None  # the operator's limits (worker/limits), shared by the fleet in Redis
        self.liveness: Liveness | None = None  # its liveness lock (fast death detection)
        self.started = asyncio.Event()
        # `decide` for runs whose expressions can do real work (sorted, join, ...): off the event loop, in
        # one thread, so at most one evaluation competes with the loop for the GIL
        self._expression_threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentrt-expressions")

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        # the credential lives in Settings now: before any child process starts (sandboxes, tool servers),
        # it leaves the environment, so none can inherit it
        forget_identity()
        set_expression_budget(cpu_ms=s.expression_budget_ms)
        self.pool = await _retry_forever("postgres", lambda: create_pool(
            s.database_url, min_size=2, max_size=s.db_pool_size, pooler=s.database_pooler), self._stopping)
        async with self.pool.acquire() as conn:
            await migrate_conn(conn)
            try:  # the days ahead, after a stop of any length (a failure is retried by the upkeep)
                await history_partitions.ensure(conn)
            except asyncpg.PostgresError as exc:
                logger.warning("history partitions not created yet (retried by the upkeep): %s", exc)
        self.redis = redis_client(s, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15)
        self.writer = EventWriter(self.pool, s.worker_id, on_commit=self._wake_runs)
        self.writer.start()
        self.publisher = Publisher(self.redis, self.keys)
        self.publisher.start()
        self.intake = WorkIntake(self.redis, self.keys, s.worker_id)
        self.definitions = DefinitionCache(self.pool)
        self.executors = build_executors(s)
        await start_executors(self.executors)  # the warm sandbox processes (a setup error fails the start)
        self.secrets: SecretProvider = build_secret_provider(s)
        self.telemetry: Telemetry = build_telemetry(s)
        self.cipher: PayloadCipher | None = build_cipher(s)  # encrypted payloads (Vault transit)
        workflows = s.workflows_dir.resolve()
        if str(workflows) not in sys.path:
            sys.path.insert(0, str(workflows))  # `python` steps may call modules kept beside the workflows
        self.sync = DefinitionsSync(self.pool, workflows, self.publisher, self.definitions, load_checks(s))
        await self.sync.initial_scan()
        await self.pool.execute(
            """INSERT INTO workers (worker_id, hostname, pid, concurrency, lease_ttl) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL, liveness_at = NULL""",
            s.worker_id, socket.gethostname(), os.getpid(), s.concurrency, s.lease_ttl)
        liveness_url = session_url(s)  # fast death detection (worker/engine/liveness.py); None: off
        if liveness_url is not None:
            self.liveness = Liveness(liveness_url, s.worker_id)
            try:
                await self.liveness.hold(self.pool)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                logger.warning("liveness lock not taken yet (%s); the heartbeat tries again", exc)
        self.limiter = Limiter(s, self.pool)
        budgets = BudgetCheck(self.pool)  # the workflows' `budget:` (worker/budgets)
        self.limiter.checks.append(budgets)
        self.limiter.after_llm.append(budgets.settle)
        await self.limiter.start()
        self.notices = Notifier(s, self.pool, self.secrets, self._stopping)  # notifications (worker/notify)
        self._loops = [
            asyncio.create_task(self._guard("consume", self._consume_loop)),
            asyncio.create_task(self._guard("heartbeat", self._heartbeat_loop)),
            asyncio.create_task(self._guard("reconcile", self._reconcile_loop)),
            asyncio.create_task(self._guard("signals", self._signal_loop)),
            asyncio.create_task(self._guard("death watch", self._death_watch_loop)),
        ]
        if self.watch:
            self._loops.append(asyncio.create_task(self._guard("watch", self.sync.watch_loop)))
        self.schedules = SchedulerLoop(self.pool, self.publisher, self.definitions, worker_id=s.worker_id,
                                       encrypt_payloads=s.encrypt_payloads, cipher=self.cipher, off_loop=self.off_loop)
        self._loops.append(asyncio.create_task(self._guard("schedules", lambda: self.schedules.run(self._stopping))))
        self._loops += [asyncio.create_task(self._guard("notify", self.notices.dispatch_loop)),
                        asyncio.create_task(self._guard("notify-scan", self.notices.scan_loop))]
        self.publisher.event("worker", "worker.started", None, {"worker": s.worker_id})
        logger.info("worker %s started: workflows %s, concurrency %d", s.worker_id, workflows, s.concurrency)
        self.started.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work; give in-flight steps `grace` seconds, then hand their runs back."""
        if grace is None:
            grace = self.settings.shutdown_grace
        self._stopping.set()
        # stop taking work, but keep renewing leases while in-flight steps drain
        heartbeat = self._loops[1] if len(self._loops) > 1 else None
        others = [t for t in self._loops if t is not heartbeat]
        for task in others:
            task.cancel()
        # every loop also checks `_stopping` at least once a second, should a library swallow the cancel
        if others:
            await asyncio.wait(others, timeout=5.0)
        for actor in list(self.actors.values()):
            actor.shutdown()  # idle actors (timers, short retries) hand back at once
        if self._actor_tasks:
            _done, pending = await asyncio.wait(self._actor_tasks, timeout=grace)
            # steps still executing after the grace period are interrupted; their runs are handed back
            # now (not after the lease TTL) and the next owner retries the interrupted attempts
            held = {run_id: actor.lease for run_id, actor in self.actors.items()}
            for task in pending:
                task.cancel()
            if pending:
                await self._bounded("interrupted runs", asyncio.wait(pending))
            for run_id, lease in held.items():
                try:
                    await store.drop_lease(self.pool, run_id, self.settings.worker_id, lease.epoch)
                    self.publisher.enqueue(run_id, lease.priority)  # another worker picks it up at once
                except Exception:  # noqa: BLE001
                    logger.debug("could not hand back %s; its lease will expire", run_id)
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.wait({heartbeat}, timeout=5.0)
        with contextlib.suppress(RedisError, OSError):
            await self.intake.hand_back()  # entries read but not taken: to the other workers at once
        await self._bounded("the event writer", self.writer.stop())
        await self._bounded("the notifier", self.notices.aclose())
        await self._bounded("the publisher", self.publisher.stop())
        await self._bounded("the step executors", close_executors(self.executors))
        if self.limiter is not None:
            await self._bounded("the limiter", self.limiter.aclose())
        self._expression_threads.shutdown(wait=False, cancel_futures=True)
        await self.secrets.aclose()
        await self.telemetry.aclose()
        with contextlib.suppress(Exception):
            await self.pool.execute("UPDATE workers SET stopped_at = now() WHERE worker_id = $1",
                                    self.settings.worker_id)
        if self.liveness is not None:
            await self._bounded("the liveness connection", self.liveness.close())
        if not await self._bounded("the Postgres pool (a connection still in use)", self.pool.close()):
            self.pool.terminate()
        await self.redis.aclose()
        logger.info("worker %s stopped", self.settings.worker_id)

    async def _bounded(self, what: str, step: Awaitable[Any]) -> bool:
        """One step of stopping, bounded: a stuck part is reported and passed over, never a hung stop."""
        try:
            await asyncio.wait_for(step, STOP_STEP_TIMEOUT)
        except TimeoutError:
            logger.warning("stopping: %s did not finish within %.0fs; going on without it", what, STOP_STEP_TIMEOUT)
            return False
        return True

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Keep a loop alive through any error (outages, bugs): log, back off, start again."""
        delay = 0.2
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if time.monotonic() - started > 30:
                    delay = 0.2
                logger.warning("%s loop: %s: %s (retrying in %.1fs)", name, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a pure, CPU-bound call (expression evaluation) in the expression threads."""
        return await asyncio.get_running_loop().run_in_executor(self._expression_threads, fn, *args)

    # -- work ------------------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        if await self.intake.ensure_groups():
            logger.info("created consumer group %s on the work streams", WORK_GROUP)
            self._full_reconcile.set()

    async def _consume_loop(self) -> None:
        """Take work while there are free slots: the intake reads the priorities' streams weighted fair."""
        await self._ensure_group()
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self.actors)
            if free <= 0:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            try:
                batch = await self.intake.read(min(free, 500))
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream (flush, restart without persistence)
                    logger.warning("work stream or group missing in Redis: recreating it, re-deriving work "
                                   "from Postgres")
                    await self._ensure_group()
                    continue
                raise
            await self._take(batch)

    def _wake_runs(self, wake: list[tuple[str, str]], signal: list[str]) -> None:
        """After a commit: runs it made startable (a concurrency key's queue moved), runs asked to cancel."""
        for run_id, priority in wake:
            self.publisher.enqueue(run_id, priority)
        for run_id in signal:
            self.publisher.enqueue(run_id)
            self.publisher.signal(run_id)

    async def _take(self, batch: dict[str, list[Entry]]) -> None:
        entries = [entry for found in batch.values() for entry in found]
        wanted: list[str] = []
        for _entry_id, fields in entries:
            run_id = fields.get(b"run", b"").decode() if fields else ""
            if not run_id or run_id in wanted:
                continue
            actor = self.actors.get(run_id)
            if actor is not None:
                actor.notify()  # a signal for a run we are driving
            else:
                wanted.append(run_id)
        if wanted:
            for lease in await store.acquire_leases(self.pool, wanted, self.settings.worker_id,
                                                    self.settings.lease_ttl):
                self._spawn(lease)
            faults.reached("after-commit-before-ack")
        for stream, found in batch.items():
            if found:
                await self.redis.xack(stream, WORK_GROUP, *[entry_id for entry_id, _ in found])

    def _spawn(self, lease: store.Lease) -> None:
        run_id = lease.run_id
        actor = RunActor(self, lease)
        self.actors[run_id] = actor
        if lease.concurrency_key is not None:  # its end frees a slot of its key (see EventWriter.keyed)
            self.writer.keyed[run_id] = (lease.workflow, lease.concurrency_key)
        task = asyncio.create_task(actor.run(), name=f"run:{run_id}")
        self._actor_tasks.add(task)
        task.add_done_callback(functools.partial(self._actor_done, run_id))

    def _actor_done(self, run_id: str, task: asyncio.Task[None]) -> None:
        self._actor_tasks.discard(task)
        self.actors.pop(run_id, None)
        self.writer.keyed.pop(run_id, None)
        self._capacity.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("run %s actor crashed: %r", run_id, task.exception())


async def _retry_forever(what: str, make: Callable[[], Awaitable[asyncpg.Pool]], stop: asyncio.Event) -> asyncpg.Pool:
    delay = 0.5
    while True:
        try:
            return await make()
        except Exception as exc:
            if stop.is_set():
                raise
            logger.warning("%s not reachable yet: %s (retrying in %.1fs)", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def workflows_path(settings: Settings) -> Path:
    return settings.workflows_dir.resolve()
