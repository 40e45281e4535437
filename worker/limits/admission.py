"""Admission: may a call go now, and if not, how does its step wait? And `Permit`: settling a call that went.

For the limits a call obeys (sorted by name), each bucket is asked in turn (`acquire`, atomically per limit):

- its slot is now, or at most `GO_NOW` (0.5 s) away: the slot is reserved and the call sleeps until it, in
  place (the worker holds nothing else meanwhile);
- further, but within the horizon (how long the actor keeps a waiting run in memory, worker/limits/gate.py
  `hold_horizon`): the slot is reserved in Redis and remembered here; the step raises `StepThrottled` and its
  run waits, in memory, until the slot; the step then starts again (the same attempt) and finds its
  reservation. An agent step is resumed from its journal, so only the turn that waited is asked again;
- beyond the horizon: nothing is reserved. The run parks (released like a `sleep`, so it holds no worker slot)
  until shortly before its expected turn, and asks again then. Steps waiting that long queue in the limit's
  waiting set, so they wake spread out rather than all at once;
- the concurrency cap is reached: the call polls in place for up to `GO_NOW`, then parks for a second.

A call that obeys several limits takes its slot in all of them at the latest of their slots; if one of them
cannot give a slot, what the others gave is handed back. A waiting step burns no attempt: `StepThrottled` is
not a failure (worker/engine/attempt.py).

**Credits.** While a limit has more than half its burst free, the round trip that admits a call also takes a
few more slots (`_want`: a quarter of this worker's share of the burst, at most MAX_CREDITS, never under a
concurrency cap), and the next calls are admitted from them in memory. Slots taken ahead are never a burst the
limit did not allow (they were counted when taken); those not used within CREDIT_TTL_S are handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from worker.errors import StepThrottled
from worker.limits.buckets import HOLD_TTL, BucketStore, Grant, Settlement
from worker.limits.provider import Observation
from worker.limits.spec import Buckets

if TYPE_CHECKING:
    from worker.limits.gate import CallInfo, Limiter

logger = logging.getLogger(__name__)

GO_NOW = 0.5
"""Waits up to this many seconds are slept in place; longer ones park the step."""
POLL_S = 0.05
BUSY_PARK_S = 1.0
CREDIT_TTL_S = 1.0
"""Credits not used within this long are handed back."""
MAX_CREDITS = 16
RESERVATION_GRACE_S = 30.0
"""A reservation whose step has not come back this long after its slot is forgotten (the slot is lost)."""
_counter = itertools.count()


@dataclass(slots=True)
class _Part:
    """One limit's share of a call: what was reserved there."""

    bucket: Buckets
    tokens: float
    held: bool
    wait: float


@dataclass(slots=True)
class _Reservation:
    go_at: float
    """monotonic time of the slot"""
    parts: list[_Part]
    store: BucketStore
    holder: str
    tokens: int
    names: tuple[str, ...] = field(default=())


class Permit:
    """A call may go: it holds its slots (and concurrency holds); `done` settles it."""

    def __init__(self, limiter: Limiter, store: BucketStore, parts: list[_Part], holder: str) -> None:
        self.limiter = limiter
        self.store = store
        self.parts = parts
        self.holder = holder
        self.limits = tuple(p.bucket.name for p in parts)
        self._refresher: asyncio.Task[None] | None = None
        if any(p.held for p in parts):
            self._refresher = asyncio.create_task(self._refresh(), name=f"limits-hold:{holder}")

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(HOLD_TTL / 3)
            for part in self.parts:
                if part.held:
                    with contextlib.suppress(RedisError, OSError, TimeoutError):
                        await self.store.refresh(part.bucket, self.holder)

    async def done(self, *, used_tokens: int | None = None, observation: Observation | None = None,
                   status: int | None = None, sent: bool = True, wait: bool = False) -> None:
        """Settle the call: its real token use, the provider's headers, a 429, or that it never left.

        In the background unless `wait` (after a 429 the tightened budget must be in place before asking again).
        """
        if self._refresher is not None:
            self._refresher.cancel()
        obs = observation or Observation()
        is_429 = status == 429
        block = 0.0
        if status is not None and status >= 400 and (is_429 or obs.retry_after is not None):
            resets = [r for r in (obs.reset_requests, obs.reset_tokens) if r is not None]
            block = obs.retry_after if obs.retry_after is not None else min(min(resets, default=1.0), 60.0)
        settlements = []
        for part in self.parts:
            delta = 0.0
            if part.tokens:
                if used_tokens is not None:
                    delta = part.tokens - used_tokens
                elif not sent or is_429 or (status is not None and 400 <= status < 500):
                    delta = part.tokens  # the provider did not process it
            s = Settlement(holder=self.holder if part.held else "", refund_requests=0 if sent else 1, token_delta=delta,
                           used_tokens=float(used_tokens or 0) if part.tokens else 0.0,
                           remaining_requests=obs.remaining_requests if part.bucket.interval else -1.0,
                           remaining_tokens=obs.remaining_tokens if part.bucket.token_rate else -1.0,
                           block=block, is_429=is_429)
            if not s.empty:
                settlements.append((part.bucket, s))
        for bucket, s in settlements:
            if wait:
                await settle_quietly(self.store, bucket, s)
            else:
                self.limiter.settle_soon(self.store, bucket, s)


async def settle_quietly(store: BucketStore, bucket: Buckets, s: Settlement) -> None:
    """Settle, and only log when Redis is gone (holds expire by themselves; a lost refund errs on the safe side)."""
    try:
        await store.settle(bucket, s)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.debug("limits: could not settle a call under %s: %s", bucket.name, exc)


@dataclass(slots=True)
class _Credits:
    """Slots a worker took ahead while a limit had plenty of room: handed out without a round trip."""

    store: BucketStore
    count: int
    tokens: float
    """Tokens reserved with them and not handed out yet."""
    expires: float


PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}
COME_BACK = (0.8, 0.5, 0.3)
"""How far ahead of its expected slot (in horizons) a step that waits for a limit asks again, by priority."""


class Admission:
    """Admits the calls of one worker (see the module docstring); remembers the slots of parked steps."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self._reserved: dict[str, _Reservation] = {}
        self._credits: dict[str, _Credits] = {}
        self._next_purge = 0.0

    async def admit(self, info: CallInfo, chosen: list[Buckets], tokens: int) -> Permit | None:
        for check in self.limiter.checks:
            await check(info)
        if not chosen:
            return None
        self._purge()
        names = tuple(b.name for b in chosen)
        res = self._reserved.pop(info.call_key, None)
        if res is not None and res.names == names:
            return await self._resume(info, res)
        if res is not None:  # the limits changed meanwhile: hand the old slots back
            await self._refund(res.store, res.parts, res.holder)
        local = self._from_credits(chosen, tokens)
        if local is not None:
            return local
        deadline = time.monotonic() + GO_NOW
        while True:
            holder = f"{self.limiter.settings.worker_id}:{info.call_key}:{next(_counter)}"
            (grant, failed, parts), store = await self.limiter.run(
                functools.partial(self._acquire_all, info=info, chosen=chosen, tokens=tokens, holder=holder))
            if failed is None:
                return await self._go(info, store, parts, holder, tokens, names)
            if grant.kind == "busy" and time.monotonic() + POLL_S < deadline:
                await asyncio.sleep(POLL_S)
                continue
            if grant.kind == "busy":
                raise StepThrottled(failed, time.time() + BUSY_PARK_S, BUSY_PARK_S, "concurrency")
            # not reserved: come back shortly before the expected turn, and ask again
            # higher priorities come back earlier before the same expected slot, so they reserve it first
            delay = max(GO_NOW, grant.wait - self.limiter.horizon * COME_BACK[PRIORITY_RANK.get(info.priority, 1)])
            raise StepThrottled(failed, time.time() + delay, grant.wait)

    async def _acquire_all(self, store: BucketStore, *, info: CallInfo, chosen: list[Buckets], tokens: int,
                           holder: str) -> tuple[Grant, str | None, list[_Part]]:
        parts: list[_Part] = []
        not_before = 0.0
        grant = Grant("ok", 0.0)
        for b in chosen:
            cost = float(tokens) if b.token_rate else 0.0
            grant = await store.acquire(b, cost=cost, holder=holder, waiter=info.call_key, not_before=not_before,
                                        rate_done=False, horizon=self.limiter.horizon, go_now=GO_NOW,
                                        want=self._want(b, cost), priority=PRIORITY_RANK.get(info.priority, 1))
            if grant.kind != "ok":
                await self._refund(store, parts, holder)
                return grant, b.name, []
            if grant.extra:
                self._add_credits(store, b, grant.extra, cost)
            parts.append(_Part(b, cost, grant.held, grant.wait))
            not_before = max(not_before, grant.wait)
        return grant, None, parts

    async def _go(self, info: CallInfo, store: BucketStore, parts: list[_Part], holder: str, tokens: int,
                  names: tuple[str, ...]) -> Permit:
        last = max(parts, key=lambda p: p.wait)
        if last.wait > GO_NOW:
            # a slot within the horizon: the run waits for it in memory, and the step finds it again
            for part in parts:
                if part.held:
                    part.held = False
                    await settle_quietly(store, part.bucket, Settlement(holder=holder))
            self._reserved[info.call_key] = _Reservation(time.monotonic() + last.wait, parts, store, holder, tokens,
                                                         names)
            raise StepThrottled(last.bucket.name, time.time() + last.wait, last.wait)
        if last.wait > 0:
            await asyncio.sleep(last.wait)
        return Permit(self.limiter, store, parts, holder)

    async def _resume(self, info: CallInfo, res: _Reservation) -> Permit:
        wait = res.go_at - time.monotonic()
        if wait > GO_NOW:  # woken early
            self._reserved[info.call_key] = res
            raise StepThrottled(max(res.parts, key=lambda p: p.wait).bucket.name, time.time() + wait, wait)
        if wait > 0:
            await asyncio.sleep(wait)
        deadline = time.monotonic() + GO_NOW
        for part in res.parts:
            if not part.bucket.concurrency:
                continue
            while True:  # the rate slot is ours; the concurrency hold is taken only now, as the call goes
                grant = await res.store.acquire(part.bucket, cost=0.0, holder=res.holder, waiter=info.call_key,
                                                not_before=0.0, rate_done=True, horizon=self.limiter.horizon,
                                                go_now=GO_NOW)
                if grant.kind == "ok":
                    part.held = grant.held
                    break
                if time.monotonic() + POLL_S >= deadline:
                    await self._refund(res.store, res.parts, res.holder)
                    raise StepThrottled(part.bucket.name, time.time() + BUSY_PARK_S, BUSY_PARK_S, "concurrency")
                await asyncio.sleep(POLL_S)
        return Permit(self.limiter, res.store, res.parts, res.holder)

    async def _refund(self, store: BucketStore, parts: list[_Part], holder: str) -> None:
        for part in parts:
            await settle_quietly(store, part.bucket, Settlement(
                holder=holder if part.held else "", refund_requests=1, token_delta=part.tokens))

    # -- credits ----------------------------------------------------------------------------------------------
    def _want(self, b: Buckets, cost: float) -> int:
        """Credits to ask for with a call: a few per worker's share of the burst, none under a concurrency cap."""
        if b.concurrency:
            return 0
        share = 4 * max(1, self.limiter.live_workers)
        room = b.burst if b.interval > 0 else int(b.token_capacity // max(cost, 1.0))
        return max(0, min(MAX_CREDITS, room // share))

    def _add_credits(self, store: BucketStore, b: Buckets, extra: int, cost: float) -> None:
        now = time.monotonic()
        found = self._credits.get(b.name)
        if found is not None and (found.store is not store or found.expires <= now):
            self._drop_credits(b, found)
            found = None
        if found is None:
            found = self._credits[b.name] = _Credits(store, 0, 0.0, 0.0)
        found.count += extra
        found.tokens += extra * cost
        found.expires = now + CREDIT_TTL_S

    def _from_credits(self, chosen: list[Buckets], tokens: int) -> Permit | None:
        """A permit from credits alone, when every limit of the call has one (no round trip)."""
        now = time.monotonic()
        found: list[_Credits] = []
        for b in chosen:
            c = self._credits.get(b.name)
            if c is not None and c.expires <= now:
                self._drop_credits(b, c)
                c = None
            if c is None or c.count < 1 or (b.token_rate > 0 and c.tokens < tokens) or (found and
                                                                                     c.store is not found[0].store):
                return None
            found.append(c)
        parts = []
        for b, c in zip(chosen, found, strict=True):
            c.count -= 1
            if b.token_rate > 0:
                c.tokens -= tokens
            parts.append(_Part(b, float(tokens) if b.token_rate > 0 else 0.0, False, 0.0))
        return Permit(self.limiter, found[0].store, parts, "")

    def _drop_credits(self, b: Buckets, c: _Credits) -> None:
        """Hand unused credits back (their slots and tokens)."""
        self._credits.pop(b.name, None)
        if c.count or c.tokens:
            self.limiter.settle_soon(c.store, b, Settlement(refund_requests=c.count if b.interval > 0 else 0,
                                                            token_delta=c.tokens))

    def drop_all_credits(self) -> None:
        for name, c in list(self._credits.items()):
            b = next((p for p in self.limiter.known() if p.name == name), None)
            if b is not None:
                self._drop_credits(b, c)
        self._credits.clear()

    def _purge(self) -> None:
        now = time.monotonic()
        if now < self._next_purge or not self._reserved:
            return
        self._next_purge = now + 10.0
        for key, res in list(self._reserved.items()):
            if res.go_at + RESERVATION_GRACE_S < now:
                del self._reserved[key]

    def reserved(self) -> dict[str, Any]:
        """Slots held for parked steps (for tests and diagnostics)."""
        return {k: r.go_at for k, r in self._reserved.items()}
