"""Waiting for runs to finish, pushed rather than polled.

The worker that commits a run's end publishes on the run's `done` channel (worker/bus/publisher.py). A client
keeps ONE pub/sub connection for all the runs it waits for (`CompletionWatcher`): each wait subscribes to its
run's channel, then reads the run's row; a message wakes it at once. The row is read again every `recheck`
seconds whatever happens, so a lost message, a run ended outside a worker (a queued run cancelled) or Redis
being away costs at most that delay, never the wait itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from worker.bus.connect import REDIS_ERRORS
from worker.bus.streams import Keys

logger = logging.getLogger(__name__)


class CompletionWatcher:
    """One pub/sub connection, many waiters: `watch(run_id)` gives an Event set when the run's end is published."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._lock = asyncio.Lock()
        self.broken = False
        """Redis could not be used: waits fall back to reading the row."""

    async def watch(self, run_id: str) -> asyncio.Event:
        event = asyncio.Event()
        channel = self._keys.done(run_id)
        try:
            async with self._lock:
                if self._pubsub is None:
                    self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                first = run_id not in self._waiters
                self._waiters.setdefault(run_id, set()).add(event)
                if first:
                    await self._pubsub.subscribe(channel)
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._read(), name="completion-watcher")
        except REDIS_ERRORS as exc:
            self._note_broken(exc)
        return event

    async def unwatch(self, run_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(run_id)
        if waiters is None:
            return
        waiters.discard(event)
        if waiters:
            return
        del self._waiters[run_id]
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                async with self._lock:
                    await self._pubsub.unsubscribe(self._keys.done(run_id))

    async def _read(self) -> None:
        prefix = self._keys.done("")
        while self._waiters and self._pubsub is not None:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except REDIS_ERRORS as exc:
                self._note_broken(exc)
                await asyncio.sleep(1.0)
                continue
            if not message or message.get("type") != "message":
                continue
            channel = message["channel"]
            run_id = (channel.decode() if isinstance(channel, bytes) else str(channel)).removeprefix(prefix)
            for event in self._waiters.get(run_id, ()):
                event.set()

    def _note_broken(self, exc: BaseException) -> None:
        if not self.broken:
            logger.debug("completion watcher: Redis unavailable (%s); waits read the run's row instead", exc)
        self.broken = True

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                await asyncio.wait_for(reader, 2.0)
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()
