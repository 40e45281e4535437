"""Where a limit's buckets live: `RedisBuckets` (shared by the fleet, the Lua scripts of worker/limits/lua.py) or
`LocalBuckets` (this worker's own share, while Redis cannot be reached). Both answer the same questions with the
same rules; the local one runs them in Python on the monotonic clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from worker.limits.spec import Buckets

HOLD_TTL = 30.0
"""Seconds a concurrency hold lasts unless refreshed (a dead worker's holds expire after this)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to "may this call go?" for one limit."""

    kind: Literal["ok", "wait", "busy"]
    """ok: reserved, go after `wait`; wait: not reserved, the slot is about `wait` away (ask again later);
    busy: the concurrency cap is reached (ask again in about `wait`)."""
    wait: float
    held: bool = False
    """ok with a concurrency hold taken (release it when the call ends)."""
    extra: int = 0
    """ok, and this many more slots (each with the call's tokens) were taken for later calls: credits."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """What happened to a call that went out (or was refunded before it did)."""

    holder: str = ""
    """The concurrency hold to release ("" none)."""
    refund_requests: int = 0
    """Give back this many request slots (the call never left; credits that were not used)."""
    token_delta: float = 0.0
    """Tokens to give back (positive) or charge further (negative): reserved minus used."""
    used_tokens: float = 0.0
    remaining_requests: float = -1.0
    """The provider says this many requests may go now (-1: it did not say)."""
    remaining_tokens: float = -1.0
    block: float = 0.0
    """Nothing may go for this many seconds (Retry-After)."""
    is_429: bool = False

    @property
    def empty(self) -> bool:
        return (not self.holder and not self.refund_requests and not self.token_delta and not self.used_tokens
                and self.remaining_requests < 0 and self.remaining_tokens < 0 and self.block <= 0 and not self.is_429)


class BucketStore(Protocol):
    async def acquire(self, b: Buckets, *, cost: float, holder: str, waiter: str, not_before: float,
                      rate_done: bool, horizon: float, go_now: float, want: int = 0, priority: int = 1) -> Grant:
        """`priority` 0 high, 1 normal, 2 low: the order of the steps waiting longer than the horizon."""
        ...

    async def settle(self, b: Buckets, s: Settlement) -> None: ...

    async def refresh(self, b: Buckets, holder: str) -> None: ...


@dataclass(slots=True)
class _State:
    tat: float | None = None
    level: float | None = None
    ts: float = 0.0
    holders: dict[str, float] = field(default_factory=dict)


class LocalBuckets:
    """This worker's share of each limit, in memory (the fallback while Redis is unreachable).

    `share` is the fraction of every limit this worker may use (1 / live workers). A limit's state here starts
    empty, like a lost Redis bucket. Only this worker's calls count: the share is what keeps the fleet under
    the limit.
    """

    def __init__(self, share: float = 1.0) -> None:
        self.share = share
        self._state: dict[str, _State] = {}
        self._hold_until = 0.0

    def restart(self, hold: float) -> None:
        """Start every limit from empty, and let nothing new go for `hold` seconds: the slots the fleet reserved
        in Redis before it became unreachable (at most one horizon ahead) go first."""
        self._state.clear()
        self._hold_until = time.monotonic() + hold

    def _get(self, b: Buckets, now: float) -> tuple[Buckets, _State]:
        mine = b.share(self.share)
        state = self._state.get(b.name)
        if state is None:
            base = max(now, self._hold_until)
            state = self._state[b.name] = _State(tat=base + mine.tolerance if mine.interval else None,
                                                 level=-(base - now) * mine.token_rate if mine.token_rate else None,
                                                 ts=now)
        return mine, state

    def _level(self, b: Buckets, state: _State, now: float) -> float:
        level = min(b.token_capacity, (state.level or 0.0) + max(0.0, now - state.ts) * b.token_rate)
        state.ts = now
        return level

    async def acquire(self, b: Buckets, *, cost: float, holder: str, waiter: str, not_before: float,
                      rate_done: bool, horizon: float, go_now: float, want: int = 0, priority: int = 1) -> Grant:
        """As the ACQUIRE script, without credits (`want` is ignored: asking costs no round trip here) and
        without a queue of waiters (`priority` is ignored: this worker's own share, while Redis is away)."""
        now = time.monotonic()
        mine, state = self._get(b, now)
        slot = now + not_before
        level: float | None = None
        if not rate_done:
            if mine.interval > 0:
                tat = state.tat if state.tat is not None else now + mine.tolerance
                slot = max(slot, tat - mine.tolerance)
            if mine.token_rate > 0:
                level = self._level(mine, state, now)
                need = min(cost, mine.token_capacity)
                if level < need:
                    slot = max(slot, now + (need - level) / mine.token_rate)
        wait = slot - now
        for name, expiry in list(state.holders.items()):
            if expiry <= now:
                del state.holders[name]
        free = not mine.concurrency or len(state.holders) < mine.concurrency
        if wait > horizon:
            return Grant("wait", wait)
        if not free and wait <= go_now:
            return Grant("busy", max(0.05, min(state.holders.values()) - now))
        if not rate_done and mine.interval > 0:
            state.tat = max(state.tat if state.tat is not None else now, slot) + mine.interval
        if level is not None:
            state.level = level - cost
        held = bool(mine.concurrency) and wait <= go_now
        if held:
            state.holders[holder] = now + HOLD_TTL
        return Grant("ok", wait, held)

    async def settle(self, b: Buckets, s: Settlement) -> None:
        now = time.monotonic()
        mine, state = self._get(b, now)
        state.holders.pop(s.holder, None)
        if mine.interval > 0 and state.tat is not None:
            if s.refund_requests and state.tat > now:
                state.tat = max(now, state.tat - mine.interval * s.refund_requests)
            if s.remaining_requests >= 0:
                state.tat = max(state.tat, now + mine.tolerance + mine.interval
                                - s.remaining_requests * self.share * mine.interval)
            if s.block > 0:
                state.tat = max(state.tat, now + s.block + mine.tolerance)
        if mine.token_rate > 0:
            level = min(mine.token_capacity, self._level(mine, state, now) + s.token_delta)
            if s.remaining_tokens >= 0:
                level = min(level, s.remaining_tokens * self.share)
            if s.block > 0:
                level = min(level, -mine.token_rate * s.block)
            state.level = level

    async def refresh(self, b: Buckets, holder: str) -> None:
        state = self._state.get(b.name)
        if state is not None and holder in state.holders:
            state.holders[holder] = time.monotonic() + HOLD_TTL
