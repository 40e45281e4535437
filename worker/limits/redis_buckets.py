"""The fleet's shared buckets: the Lua scripts of worker/limits/lua.py, run with redis-py's `register_script`
(EVALSHA, loaded again by itself after a flush or a restart) on the keys of one limit.

Every Redis error escapes as it is (RedisError, OSError, TimeoutError): the limiter decides what losing Redis
means (worker/limits/gate.py: this worker's conservative share, and a warning).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from worker.limits import lua
from worker.limits.buckets import HOLD_TTL, Grant, Settlement
from worker.limits.spec import Buckets


def limit_tag(prefix: str, name: str) -> str:
    """The hash tag of a limit's keys: every key of one limit lands in one Redis Cluster slot."""
    return "{" + f"{prefix}:limit:{name}" + "}"


def limit_keys(prefix: str, name: str) -> list[str]:
    """state, conc, wait (in the order the scripts take them)."""
    tag = limit_tag(prefix, name)
    return [f"{tag}:{part}" for part in ("state", "conc", "wait")]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _f(value: Any, default: float | None = None) -> float | None:
    text = _s(value) if value is not None else ""
    return float(text) if text else default


@dataclass(frozen=True, slots=True)
class RawStatus:
    """One limit's state as Redis has it (see `RedisBuckets.status`)."""

    now: float
    tat: float | None
    level: float | None
    level_ts: float | None
    holders: int
    waiting: int
    window: int | None
    window_requests: int
    window_tokens: int
    granted: int
    throttled: int
    rejected_429: int
    last_429: float | None


class RedisBuckets:
    """The limiter's Redis side (one per worker, its own connection pool with short timeouts)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, max_calls: int = 64) -> None:
        self.redis = redis
        self.prefix = prefix
        # at most this many calls at once (below the connection pool's size): more wait here, never fail
        self._slots = asyncio.Semaphore(max_calls)
        self._static: dict[tuple[Buckets, float, float], str] = {}
        self._acquire = redis.register_script(lua.ACQUIRE)
        self._settle = redis.register_script(lua.SETTLE)
        self._refresh = redis.register_script(lua.REFRESH)
        self._drain = redis.register_script(lua.DRAIN)
        self._status = redis.register_script(lua.STATUS)
        self._keys: dict[str, list[str]] = {}

    def keys(self, name: str) -> list[str]:
        found = self._keys.get(name)
        if found is None:
            found = self._keys[name] = limit_keys(self.prefix, name)
        return found

    def _params(self, b: Buckets, horizon: float = 0.0, go_now: float = 0.0) -> str:
        """The limit's fixed numbers as the scripts' first argument (lua.PARAMS), made once per limit."""
        key = (b, horizon, go_now)
        found = self._static.get(key)
        if found is None:
            values = (b.interval, b.tolerance, b.token_rate, b.token_capacity, b.concurrency, HOLD_TTL, horizon,
                      go_now, b.period)
            found = self._static[key] = " ".join(repr(float(v)) for v in values)
        return found

    async def acquire(self, b: Buckets, *, cost: float, holder: str, waiter: str, not_before: float,
                      rate_done: bool, horizon: float, go_now: float, want: int = 0, priority: int = 1) -> Grant:
        args = [self._params(b, horizon, go_now), repr(float(cost)), holder, waiter, repr(not_before),
                "1" if rate_done else "0", str(want), str(priority)]
        async with self._slots:
            reply = await self._acquire(self.keys(b.name), args)
        kind, wait, held, extra = _s(reply).split()
        return Grant(kind, float(wait), held == "1", int(extra))  # type: ignore[arg-type]  # ok|wait|busy

    async def settle(self, b: Buckets, s: Settlement) -> None:
        args = [self._params(b), s.holder, str(s.refund_requests), repr(float(s.token_delta)),
                repr(float(s.used_tokens)), repr(float(s.remaining_requests)), repr(float(s.remaining_tokens)),
                repr(float(s.block)), "1" if s.is_429 else "0"]
        async with self._slots:
            await self._settle(self.keys(b.name)[:2], args)

    async def refresh(self, b: Buckets, holder: str) -> None:
        async with self._slots:
            await self._refresh([self.keys(b.name)[1]], [holder, repr(HOLD_TTL)])

    async def drain(self, b: Buckets, hold: float = 0.0) -> None:
        """Start the limit from empty, nothing new for `hold` seconds (after this worker could not reach Redis:
        the provider's bucket may be drained by what the fleet sent meanwhile, whatever Redis remembers)."""
        async with self._slots:
            await self._drain(self.keys(b.name)[:1], [self._params(b), repr(hold)])

    async def status(self, name: str) -> RawStatus:
        async with self._slots:
            r = [_s(v) for v in await self._status(self.keys(name), [])]
        return RawStatus(now=float(r[0]), holders=int(r[1]), waiting=int(r[2]), tat=_f(r[3]), level=_f(r[4]),
                         level_ts=_f(r[5]), window=int(r[6]) if r[6] else None, window_requests=int(r[7] or 0),
                         window_tokens=int(r[8] or 0), granted=int(r[9] or 0), throttled=int(r[10] or 0),
                         rejected_429=int(r[11] or 0), last_429=_f(r[12]))
