"""LivePublisher: a worker's writer of live LLM output, one background task, off the step's path.

Steps only append to an in-memory queue (`push`, never awaited); the task sends what is queued in
pipelines (XADD with an exact MAXLEN, then EXPIRE, per run stream). Redis is transport here too: an error
drops the batch with a debug log, and a full queue drops new entries; the step never waits for Redis
(`settle` waits a bounded moment at the end of a call, and not at all while Redis is failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from worker.bus.connect import REDIS_ERRORS, redis_client, redis_keys
from worker.config import Settings
from worker.streams.entries import LLM_ABANDONED, LiveConfig, encode_entry

if TYPE_CHECKING:
    from worker.steps.base import StepContext
    from worker.streams.call import LiveCall

logger = logging.getLogger(__name__)

BATCH = 256
SETTLE_SECONDS = 0.05
"""At the end of a call, how long the step waits at most for its last entries to reach Redis (so a reader
that sees the step complete finds them there)."""
FAILING_FOR = 5.0  # after a Redis error, seconds during which `settle` does not wait at all
ATTEMPTS_KEPT = 10_000


def stream_run_id(run_id: str) -> str | None:
    """The run id when it is a canonical UUID (the engine's), else None: nothing is published for it."""
    try:
        canonical = str(uuid.UUID(run_id))
    except (ValueError, TypeError, AttributeError):
        return None
    return canonical if canonical == run_id else None


class LivePublisher:
    """One per worker (built with the step executors, closed with them)."""

    def __init__(self, settings: Settings, config: LiveConfig | None = None) -> None:
        self.config = config or LiveConfig.from_env()
        self.keys = redis_keys(settings)
        self._settings = settings
        self._redis: aioredis.Redis | None = None
        self._queue: deque[tuple[str, dict[str, bytes]]] = deque()
        self._wake: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._queued = 0
        self._handled = 0
        self._failed_at = 0.0
        self._attempts: OrderedDict[tuple[str, str, int | None, int], None] = OrderedDict()
        self.published = 0
        self.dropped = 0

    # -- what steps call (synchronous, cheap) ------------------------------------------------
    def call(self, ctx: StepContext, *, turn: int, extra_secrets: Mapping[str, Mapping[str, Any]] | None = None
             ) -> LiveCall | None:
        """A coalescing writer for one LLM call of `ctx`'s attempt, or None when nothing is published.

        The stream is always the attempt's own run's: the key comes from the engine's run id, never from the
        step's arguments. The first call of attempt N > 1 marks what earlier attempts left unfinished.
        """
        from worker.streams.call import LiveCall

        run_id = stream_run_id(str(ctx.run_id))
        if run_id is None or not self.config.enabled:
            return None
        attempt_key = (run_id, ctx.step_id, ctx.item, ctx.attempt)
        if attempt_key not in self._attempts:
            self._attempts[attempt_key] = None
            if len(self._attempts) > ATTEMPTS_KEPT:
                self._attempts.popitem(last=False)
            if ctx.attempt > 1:
                self.push(run_id, {"t": LLM_ABANDONED, "run": run_id, "step": ctx.step_id, "item": ctx.item,
                                   "attempt": None, "turn": None, "seq": 0, "superseded_by": ctx.attempt})
        secrets = {**ctx.secrets, **(extra_secrets or {})}
        return LiveCall(self, run_id, ctx.step_id, ctx.item, ctx.attempt, turn, secrets=secrets,
                        text=not getattr(ctx, "encrypted", False))

    def push(self, run_id: str, body: dict[str, Any]) -> None:
        if len(self._queue) >= self.config.queue_max:
            self.dropped += 1
            return
        self._queue.append((self.keys.live(run_id), encode_entry(body)))
        self._queued += 1
        self._ensure_task()
        assert self._wake is not None
        self._wake.set()

    async def settle(self, timeout: float = SETTLE_SECONDS) -> None:  # noqa: ASYNC109 - a bound, not an API
        """Wait (at most `timeout`) until what was pushed so far has been sent, unless Redis is failing."""
        target = self._queued
        if self._progress is None or self._handled >= target or time.monotonic() - self._failed_at < FAILING_FOR:
            return
        deadline = time.monotonic() + timeout
        while True:
            self._progress.clear()
            left = deadline - time.monotonic()
            if self._handled >= target or left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._progress.wait()

    # -- the sender --------------------------------------------------------------------------
    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            if self._closing:
                return
            self._wake = self._wake or asyncio.Event()
            self._progress = self._progress or asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="live-publisher")

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = redis_client(self._settings, socket_timeout=2, socket_connect_timeout=1)
        return self._redis

    async def _loop(self) -> None:
        assert self._wake is not None and self._progress is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                await self._send(batch)
                self._handled += len(batch)
                self._progress.set()
            if self._closing:
                return

    async def _send(self, batch: list[tuple[str, dict[str, bytes]]]) -> None:
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                for key, fields in batch:
                    pipe.xadd(key, fields, maxlen=self.config.maxlen, approximate=False)  # type: ignore[arg-type]
                for key in dict.fromkeys(k for k, _ in batch):
                    pipe.expire(key, self.config.ttl)
                await pipe.execute()
            self.published += len(batch)
        except Exception as exc:  # noqa: BLE001 - RedisError, OSError, ...: live output is best effort
            # (the committed step output has the whole answer)
            self.dropped += len(batch)
            self._failed_at = time.monotonic()
            logger.debug("live stream: %d entries dropped (redis: %s)", len(batch), exc)

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            done, _ = await asyncio.wait({self._task}, timeout=2.0)
            if not done:
                self._task.cancel()
        if self._redis is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.aclose()
