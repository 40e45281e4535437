"""The WorkerService's upkeep loops: heartbeat (renew leases, notice signals and lost leases), reconcile
(re-derive work from Postgres, admit concurrency-key queues that could move, reclaim dead consumers' entries,
forget dead consumers) and signals (wake the actor of a run that got one). A mixin: the attributes it reads are
the service's (worker/engine/service.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from worker import faults
from worker.bus.connect import REDIS_ERRORS
from worker.engine import liveness
from worker.history import partitions as history_partitions
from worker.store import concurrency
from worker.store import runs as store

if TYPE_CHECKING:
    from worker.bus.intake import Entry, WorkIntake
    from worker.bus.publisher import Publisher
    from worker.bus.streams import Keys
    from worker.config import Settings
    from worker.engine.actor import RunActor
    from worker.engine.liveness import Liveness

logger = logging.getLogger(__name__)


class Upkeep:
    settings: Settings
    keys: Keys
    pool: asyncpg.Pool
    redis: aioredis.Redis
    publisher: Publisher
    intake: WorkIntake
    actors: dict[str, RunActor]
    _stopping: asyncio.Event
    _full_reconcile: asyncio.Event
    _last_repair: float
    _last_consumer_gc: float
    liveness: Liveness | None
    _last_partitions: float = 0.0

    async def _take(self, batch: dict[str, list[Entry]]) -> None:
        raise NotImplementedError

    # -- heartbeat -------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        s = self.settings
        while not self._stopping.is_set():
            asked_at = time.monotonic()
            held = await store.renew_leases(self.pool, s.worker_id, s.lease_ttl, list(self.actors))
            for run_id, actor in list(self.actors.items()):
                if actor.acquired_at >= asked_at:
                    continue  # leased while the renewal was in flight
                info = held.get(run_id)
                if info is None or info.epoch != actor.lease.epoch:
                    if actor.state.terminal:
                        continue
                    actor.lose()
                elif info.signal_version > actor._seen_signal_version or info.cancel_requested:
                    actor.notify()
            await self.pool.execute(
                "UPDATE workers SET heartbeat_at = now(), held_runs = $2, stopped_at = NULL WHERE worker_id = $1",
                s.worker_id, len(self.actors))
            if self.liveness is not None:
                try:
                    await self.liveness.hold(self.pool)  # again, if its connection dropped
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    logger.warning("liveness lock lost and not taken again yet: %s", exc)
            await asyncio.sleep(s.heartbeat_interval)

    # -- reconcile -------------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        s = self.settings
        while not self._stopping.is_set():
            full = self._full_reconcile.is_set()
            self._full_reconcile.clear()
            run_ids = await store.reconcile(self.pool, s.redeliver_after, full=full)
            if full or time.monotonic() - self._last_repair > 10 * s.reconcile_interval:
                self._last_repair = time.monotonic()
                admitted = await concurrency.repair(self.pool)  # queues that could move but did not
                if admitted:
                    logger.info("reconciler: admitted %d queued run(s) whose key had room", len(admitted))
                run_ids += admitted
            if run_ids:
                logger.info("reconciler: re-enqueued %d run(s)%s", len(run_ids), " (full)" if full else "")
                for run_id, priority in run_ids:
                    self.publisher.enqueue(run_id, priority)
                await self.publisher.flush()
            await self._reclaim()
            await self._forget_dead_consumers()
            await self._ensure_partitions()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full_reconcile.wait(), timeout=s.reconcile_interval)

    async def _ensure_partitions(self, every: float = 3600.0) -> None:
        """Keep the history's daily partitions a week ahead (worker/history/partitions.py), once an hour."""
        now = time.monotonic()
        if now - self._last_partitions < every:
            return
        try:
            await history_partitions.ensure(self.pool)
        except asyncpg.PostgresError as exc:
            logger.warning("history partitions not created (retried on the next pass): %s", exc)
            return
        self._last_partitions = now

    async def _forget_dead_consumers(self, every: float = 60.0, idle_ms: int = 600_000) -> None:
        """Remove consumers that have been silent for 10 minutes and hold no entries (dead workers)."""
        now = time.monotonic()
        if now - self._last_consumer_gc < every:
            return
        self._last_consumer_gc = now
        try:
            await self.intake.forget_idle_consumers(idle_ms)
        except REDIS_ERRORS as exc:
            logger.debug("consumer cleanup skipped: %s", exc)

    async def _reclaim(self) -> None:
        """Take over entries that a dead consumer read but never acknowledged (each priority's stream)."""
        try:
            found = await self.intake.claim_stale(int(self.settings.lease_ttl * 1000))
        except ResponseError:
            raise
        except REDIS_ERRORS as exc:
            logger.debug("reclaim skipped: %s", exc)
            return
        if found:
            logger.info("reclaimed %d pending entr(y/ies) from dead consumers", sum(map(len, found.values())))
            faults.reached("during-reclaim")
            await self._take(found)

    # -- death watch -----------------------------------------------------------------------
    async def _death_watch_loop(self) -> None:
        """Take over the runs of workers that died (their liveness lock is free) without waiting for their TTL."""
        if self.liveness is None:
            return
        me, settle = self.settings.worker_id, 2 * self.settings.heartbeat_interval
        while not self._stopping.is_set():
            if self.liveness.held_for() >= settle:  # after a database restart, the others need a moment too
                for gone in await liveness.dead_workers(self.pool, me):
                    moved = await liveness.take_over(self.pool, gone)
                    logger.warning("worker %s is gone (its liveness lock is free): %d run(s) taken over now",
                                   gone, moved)
                    self._full_reconcile.set()  # its runs, and what its consumer had read, are handed out now
                    try:
                        await self.intake.forget_consumer(gone)
                    except REDIS_ERRORS as exc:
                        logger.debug("consumer of %s not removed yet: %s", gone, exc)
            await asyncio.sleep(liveness.DEATH_CHECK_S)

    # -- signals ---------------------------------------------------------------------------
    async def _signal_loop(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.signals)
            while not self._stopping.is_set():
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                run_id = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                actor = self.actors.get(run_id)
                if actor is not None:
                    actor.notify()
        finally:
            await pubsub.aclose()

