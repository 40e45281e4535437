"""Publishing to Redis after commit. Redis is transport: failures are logged, never fatal.

Live events go out as one `XADD_ALL` script call per batch (up to `EVENTS_PER_CALL` entries), not one XADD
each: per command, redis-py spends ~40-50 us of the worker's CPU packing it and reading its reply, which
was the largest single cost of a step after the engine itself (py-spy under the engine benchmark). The
entries are the same as before (one field, `e`), in the same order, on the one events stream.

The same pipeline works on a Redis Cluster (worker/bus/connect.py): redis-py splits it by node; the script
touches only its one declared key (the events stream), and PUBLISH goes to any node (classic pub/sub is
broadcast across the cluster)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from worker.bus.codec import EVENT_FIELD, encode_payload
from worker.bus.connect import REDIS_ERRORS, pipe_evalsha, pipe_publish
from worker.bus.streams import EVENTS_MAXLEN, WORK_MAXLEN, Keys

logger = logging.getLogger(__name__)

EVENTS_PER_CALL = 500
"""Entries per script call: a call is atomic in Redis, so a bounded batch keeps it from holding the server."""
XADD_ALL = """
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i])
end
return #ARGV - 2
"""
"""KEYS[1]: the events stream; ARGV: its MAXLEN, the field name, then one payload per entry."""


class Publisher:
    """Batches live events (one script call per batch), work entries and wake-ups into one pipeline."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._events: list[bytes] = []
        self._xadd_all = redis.register_script(XADD_ALL)
        self._work: list[tuple[str, str | None]] = []
        self._signals: list[str] = []
        self._done: list[str] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0
        self._closing = False
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="publisher")

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bound, not a deadline API
        """Flush what is queued and end the loop. The loop ends by itself (a flag, not cancellation:
        redis-py can swallow a CancelledError that lands inside a pipeline, leaving a task that never ends)."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            logger.warning("publisher did not stop within %.0fs; %d live events dropped", timeout,
                           len(self._events))

    def event(self, kind: str, type_: str, run_id: str | None, data: dict[str, Any]) -> None:
        self._events.append(encode_payload(kind, type_, run_id, data))
        self._wakeup.set()

    def enqueue(self, run_id: str, priority: str | None = None) -> None:
        """Put "run X needs a worker" on the work stream of its priority (None: the normal one)."""
        self._work.append((run_id, priority))
        self._wakeup.set()

    def signal(self, run_id: str) -> None:
        self._signals.append(run_id)
        self._wakeup.set()

    def finished(self, run_id: str) -> None:
        """The run's terminal commit is done: wake whoever waits for it (`wait_for_run`)."""
        self._done.append(run_id)
        self._wakeup.set()

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            if self._closing and not (self._events or self._work or self._signals or self._done):
                return

    async def flush(self) -> None:
        events, work, signals, done = self._events, self._work, self._signals, self._done
        if not (events or work or signals or done):
            return
        self._events, self._work, self._signals, self._done = [], [], [], []
        chunks: list[list[bytes | str | int]] = [[EVENTS_MAXLEN, EVENT_FIELD, *events[i:i + EVENTS_PER_CALL]]
                  for i in range(0, len(events), EVENTS_PER_CALL)]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id, priority in work:
                    pipe.xadd(self._keys.work_lane(priority), {"run": run_id}, maxlen=WORK_MAXLEN, approximate=True)
                for args in chunks:  # by hash: no SCRIPT EXISTS round trip per flush (redis-py's scripts do one)
                    pipe_evalsha(pipe, self._xadd_all.sha, [self._keys.events], args)
                for run_id in signals:
                    pipe_publish(pipe, self._keys.signals, run_id)
                for run_id in done:
                    pipe_publish(pipe, self._keys.done(run_id), "1")
                results = await pipe.execute(raise_on_error=False)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed and all(isinstance(r, NoScriptError) for r in failed):
                # Redis restarted (or flushed its scripts): load it once, then send those batches again, in order
                await self._redis.script_load(XADD_ALL)
                sent = results[len(work):len(work) + len(chunks)]
                for args, result in zip(chunks, sent, strict=True):
                    if isinstance(result, NoScriptError):
                        await self._redis.evalsha(self._xadd_all.sha, 1, self._keys.events, *args)
            elif failed:
                raise failed[0]
        except REDIS_ERRORS as exc:
            # Work entries are re-derived from Postgres by the reconciler; live events are best effort.
            self.dropped += len(events)
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                logger.warning("redis unavailable, %d live events dropped, %d work entries left to the "
                               "reconciler: %s", len(events), len(work), exc)
