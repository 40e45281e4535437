"""The pre-call gate: every call a limited step makes asks the worker's `Limiter` first.

One `Limiter` per worker. For each attempt the engine makes a `StepGate` (`Limiter.gate(...)`, given to the
executor as `ctx.gate`): `llm` and `agent` steps ask it before every LLM request (`before_llm`: the step's
named limits plus every limit whose `match:` fits the provider, model and host; the request's tokens are
reserved), `tool`, `http` and `python` steps once per attempt (`before_step`: the named limits). The answer is
a `Permit` (the call may go: report how it went with `Permit.done`), None (no limit applies), or
`StepThrottled` (wait: the run parks, see worker/limits/admission.py for how long).

**Pre-call checks (the hook for budgets).** `Limiter.checks` is a list of `async (CallInfo) -> None`, called in
order before any limit is asked, for every call of every step kind that goes through the gate, limited or not.
`CallInfo` names the run, workflow, step, call key, the limits the call obeys, and for LLM calls the provider,
model, estimated tokens and estimated cost (from the step's price table). A check lets the call go by
returning; it stops it by raising `StepParked` (ask a human), `StepFailed` (fail the step) or `StepThrottled`
(wait). Nothing has been reserved when the checks run, so a refused call holds no capacity. A check with an
`applies(kind, budget) -> bool` method is skipped for the steps it says it has nothing to say about (a step no
check applies to and no limit names skips the gate altogether: one fewer suspension per step).

**Losing Redis.** The shared buckets live in Redis. When it cannot be reached the limiter does not stop
limiting: it falls back to this worker's share of every limit (1 / live workers, counted in Postgres), lets
nothing new go for one horizon (the slots the fleet reserved before go first), logs a warning once, records the
mode in the `workers` table (`agentrt limits` shows it), and tries Redis again every second (also with nothing
running: a worker that has not reached Redis for PROBE_S pings it). Back on Redis every limit starts from empty,
nothing new for one horizon (the provider's bucket may be drained by what the fleet sent meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from worker.bus.connect import redis_client
from worker.config import Settings
from worker.errors import StepFailed, StepThrottled
from worker.limits.admission import Admission, Permit, settle_quietly
from worker.limits.buckets import BucketStore, LocalBuckets, Settlement
from worker.limits.file import OperatorLimits
from worker.limits.provider import Observation
from worker.limits.redis_buckets import RedisBuckets
from worker.limits.spec import MATCHED_KINDS, Buckets, LimitSpec, buckets

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_REDIS_S = 1.0
"""While in fallback, Redis is tried again this often."""
PROBE_S = 2.0
"""A worker that has not reached Redis for this long pings it (so its mode is true without traffic)."""
WORKERS_REFRESH_S = 10.0
REDIS_CONNECTIONS = 64
REDIS_TIMEOUT_S = 1.0
SETTLE_BATCH_S = 0.05


def hold_horizon(settings: Settings) -> float:
    """How long a run may wait without its worker letting go of it (the actor's own rule, engine/actor.py):
    a step is given a reserved slot at most this far ahead, so the run wakes on time, in memory."""
    return min(5.0, settings.lease_ttl / 2)


@dataclass(frozen=True, slots=True)
class CallInfo:
    """A call about to go out, as the pre-call checks see it."""

    run_id: str
    workflow: str
    step_id: str
    item: int | None
    kind: str
    call_key: str
    """The call's idempotency key (an agent's turns each have their own)."""
    limits: tuple[str, ...]
    """The limits this call obeys (named by the step, or matched)."""
    provider: str | None = None
    model: str | None = None
    tokens: int = 0
    """Estimated tokens (prompt estimate + max_tokens): what is reserved."""
    cost_usd: float | None = None
    """Estimated cost of `tokens`, when the step's price table knows the model."""
    budget: Any = None
    """The workflow's `budget:` (worker/definitions/schema.py BudgetSpec), None without one."""
    priority: str = "normal"
    """The run's priority: among the steps waiting for a limit, higher priorities are queued first."""


PreCallCheck = Callable[[CallInfo], Awaitable[None]]


class Limiter:
    """The worker's view of the operator's limits and where their buckets live (Redis, or its own share)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool | None = None) -> None:
        self.settings = settings
        self.file = OperatorLimits(settings.workflows_dir)
        self.checks: list[PreCallCheck] = []
        """Pre-call checks (budgets): see the module docstring."""
        self.after_llm: list[Callable[[str, int, float | None], Awaitable[None]]] = []
        """Told each LLM call's real usage (call key, tokens, cost) once it is answered (zeros when it failed)."""
        self.horizon = hold_horizon(settings)
        self.mode = "redis"
        self.mode_reason: str | None = None
        self.live_workers = 1
        self._pool = pool
        # Its own connections. A Redis that hangs costs one call REDIS_TIMEOUT_S, then the fallback (one timer per
        # call, in `run`: cheaper than redis-py's per-read timeouts). RedisBuckets lets fewer calls in at once than
        # there are connections (many steps may ask at once). A connection the server closed (Redis restarted) is
        # retried once on a new one, not taken for an outage.
        # (on a Redis Cluster the pool size is per node; a limit's keys share one slot: redis_buckets.py)
        self._redis = redis_client(settings, max_connections=REDIS_CONNECTIONS + 8,
                                   socket_connect_timeout=REDIS_TIMEOUT_S, retry=Retry(NoBackoff(), 1),
                                   retry_on_error=[RedisConnectionError])
        self.shared = RedisBuckets(self._redis, settings.redis_prefix, REDIS_CONNECTIONS)
        self.local = LocalBuckets()
        self.admission = Admission(self)
        self._retry_at = 0.0
        self._last_ok = 0.0
        self._probing = False
        self._buckets: dict[str, tuple[LimitSpec, Buckets]] = {}
        self._unknown: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._batched: dict[tuple[int, str], tuple[BucketStore, Buckets, float, float]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._count_workers()
        await self._record_mode()
        self._loop = asyncio.create_task(self._workers_loop(), name="limits-workers")

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        self.admission.drop_all_credits()
        if self._flush is not None:
            self._flush.cancel()
        self._flush_batch()
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
        await self._redis.aclose()

    def gate(self, *, run_id: str, workflow: str, step_id: str, item: int | None, kind: str,
             names: tuple[str, ...], budget: Any = None, priority: str = "normal") -> StepGate:
        return StepGate(self, run_id, workflow, step_id, item, kind, names, budget, priority)

    # -- which limits a call obeys --------------------------------------------------------------------------
    def applicable(self, names: tuple[str, ...], kind: str, provider: str | None = None, model: str | None = None,
                   host: str | None = None) -> list[Buckets]:
        """The buckets of the named limits that exist, plus the matching ones for LLM calls; sorted by name."""
        specs = self.file.current().limits
        chosen: dict[str, LimitSpec] = {}
        for name in names:
            spec = specs.get(name)
            if spec is not None:
                chosen[name] = spec
            elif name not in self._unknown:
                self._unknown.add(name)  # the operator removed it after the workflow was loaded: nothing to obey
                logger.warning("limit %r is not defined in limits.yaml (any more): steps naming it run without it",
                               name)
        if kind in MATCHED_KINDS and provider is not None:
            for name, spec in specs.items():
                if spec.match is not None and spec.match.applies(provider, model or "", host or ""):
                    chosen[name] = spec
        return [self._bucket(name, spec) for name, spec in sorted(chosen.items())]

    def _bucket(self, name: str, spec: LimitSpec) -> Buckets:
        cached = self._buckets.get(name)
        if cached is None or cached[0] is not spec:
            cached = self._buckets[name] = (spec, buckets(name, spec))
        return cached[1]

    # -- where the buckets are -----------------------------------------------------------------------------
    async def run(self, op: Callable[[BucketStore], Awaitable[T]]) -> tuple[T, BucketStore]:
        """`op` on the shared buckets, or on this worker's share while Redis cannot be reached."""
        probe = self.mode != "redis" and not self._probing and time.monotonic() >= self._retry_at
        if self.mode == "redis" or probe:
            self._probing = probe  # while in fallback, one call at a time finds out whether Redis is back
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_S):
                    result = await op(self.shared)
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                self._degrade(exc)
            else:
                self._last_ok = time.monotonic()
                if self.mode != "redis":
                    self._recover()
                return result, self.shared
            finally:
                if probe:
                    self._probing = False
        return await op(self.local), self.local

    def _degrade(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_REDIS_S
        if self.mode == "fallback":
            return
        self.mode, self.mode_reason = "fallback", f"{type(exc).__name__}: {exc}"
        self.local.share = 1.0 / max(1, self.live_workers)
        self.local.restart(self.horizon)
        logger.warning("limits: Redis is unreachable (%s); until it is back this worker enforces its own share "
                       "of every limit (1 / live workers, now %d)", self.mode_reason, self.live_workers)
        self._spawn(self._count_workers())  # workers that started since the last count share the limits too
        self._spawn(self._record_mode())

    def _recover(self) -> None:
        self.mode, self.mode_reason = "redis", None
        logger.warning("limits: Redis is reachable again; limits are shared by the fleet again (starting empty)")
        known = [b for _spec, b in self._buckets.values()]
        self._spawn(self._drain(known))
        self._spawn(self._record_mode())

    async def _drain(self, known: list[Buckets]) -> None:
        for b in known:
            with contextlib.suppress(RedisError, RedisClusterException, OSError, TimeoutError):
                await self.shared.drain(b, self.horizon)

    def settle_soon(self, store: BucketStore, bucket: Buckets, s: Settlement) -> None:
        """Settle a call in the background (its step does not wait for the bookkeeping). What only corrects the
        token count (most calls: reserved minus used) is summed per limit and sent every SETTLE_BATCH_S."""
        if (s.holder or s.refund_requests or s.remaining_requests >= 0 or s.remaining_tokens >= 0 or s.block > 0
                or s.is_429):
            self._spawn(settle_quietly(store, bucket, s))
            return
        key = (id(store), bucket.name)
        found = self._batched.get(key)
        delta, used = (found[2], found[3]) if found is not None else (0.0, 0.0)
        self._batched[key] = (store, bucket, delta + s.token_delta, used + s.used_tokens)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(SETTLE_BATCH_S, self._flush_batch)

    def _flush_batch(self) -> None:
        self._flush = None
        batch, self._batched = self._batched, {}
        for store, bucket, delta, used in batch.values():
            self._spawn(settle_quietly(store, bucket, Settlement(token_delta=delta, used_tokens=used)))

    def known(self) -> list[Buckets]:
        """The limits this worker has asked about."""
        return [b for _spec, b in self._buckets.values()]

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _workers_loop(self) -> None:
        counted = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            await self._probe()
            if time.monotonic() - counted >= WORKERS_REFRESH_S:
                counted = time.monotonic()
                await self._count_workers()

    async def _probe(self) -> None:
        """Whether Redis is still there (or back, in fallback) even when no step asks: the mode `agentrt limits`
        shows is this worker's real one, and it recovers with nothing running."""
        now = time.monotonic()
        if self._probing or (self.mode == "redis" and now - self._last_ok < PROBE_S) or (
                self.mode != "redis" and now < self._retry_at):
            return
        self._probing = True
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self._redis.ping()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self._degrade(exc)
        else:
            self._last_ok = time.monotonic()
            if self.mode != "redis":
                self._recover()
        finally:
            self._probing = False

    async def _count_workers(self) -> None:
        if self._pool is None:
            return
        try:
            count = await self._pool.fetchval(
                """SELECT count(*) FROM workers WHERE stopped_at IS NULL
                     AND heartbeat_at > now() - make_interval(secs => $1)""", max(10.0, 2 * self.settings.lease_ttl))
        except (asyncpg.PostgresError, OSError) as exc:
            logger.debug("limits: cannot count live workers (%s); keeping %d", exc, self.live_workers)
            return
        self.live_workers = max(1, int(count or 1))
        self.local.share = 1.0 / self.live_workers

    async def _record_mode(self) -> None:
        if self._pool is None:
            return
        try:
            await self._pool.execute(
                """UPDATE workers SET limits_mode = $2, limits_mode_since = now(), limits_mode_reason = $3
                    WHERE worker_id = $1""", self.settings.worker_id, self.mode, self.mode_reason)
        except (asyncpg.PostgresError, OSError) as exc:
            logger.debug("limits: cannot record the mode (%s)", exc)


class StepGate:
    """The gate of one attempt of one step: what the executor asks before each call."""

    def __init__(self, limiter: Limiter, run_id: str, workflow: str, step_id: str, item: int | None, kind: str,
                 names: tuple[str, ...], budget: Any = None, priority: str = "normal") -> None:
        self.limiter = limiter
        self.run_id, self.workflow, self.step_id, self.item, self.kind = run_id, workflow, step_id, item, kind
        self.names = names
        self.budget = budget if kind in MATCHED_KINDS else None
        self.priority = priority

    @property
    def matters(self) -> bool:
        """Whether any call of this step can be limited or checked (else executors skip the gate)."""
        return bool(self.names) or self.budget is not None or any(
            _applies(check, self.kind, self.budget) for check in self.limiter.checks) or (
            self.kind in MATCHED_KINDS and any(s.match for s in self.limiter.file.current().limits.values()))

    async def before_llm(self, *, call_key: str, provider: str, model: str, host: str, tokens: int,
                         cost_usd: float | None) -> Permit | None:
        """Before one LLM request: the checks, then the named and matched limits, `tokens` reserved."""
        chosen = self.limiter.applicable(self.names, self.kind, provider, model, host)
        info = CallInfo(self.run_id, self.workflow, self.step_id, self.item, self.kind, call_key,
                        tuple(b.name for b in chosen), provider, model, tokens, cost_usd, self.budget,
                        self.priority)
        return await self.limiter.admission.admit(info, chosen, tokens)

    async def after_llm(self, call_key: str, tokens: int, cost_usd: float | None) -> None:
        """One LLM call was answered (or failed: zeros): its real usage, for the budgets."""
        if self.budget is None:
            return
        for listener in self.limiter.after_llm:
            await listener(call_key, tokens, cost_usd)

    async def before_step(self, call_key: str) -> Permit | None:
        """Before a `tool`, `http` or `python` attempt: the checks, then the named limits (requests and
        concurrency; a token rate does not apply to these calls)."""
        chosen = self.limiter.applicable(self.names, self.kind)
        info = CallInfo(self.run_id, self.workflow, self.step_id, self.item, self.kind, call_key,
                        tuple(b.name for b in chosen), priority=self.priority)
        return await self.limiter.admission.admit(info, chosen, 0)


def _applies(check: PreCallCheck, kind: str, budget: Any) -> bool:
    applies = getattr(check, "applies", None)
    return True if applies is None else bool(applies(kind, budget))


MAX_LIMITED_429 = 5
"""429s in a row a limited `tool`/`http`/`python` call waits out (the limit tightened) before the next one counts
as a failed attempt."""
_recent_429: dict[str, int] = {}


async def run_step_gated(gate: StepGate, call_key: str, call: Callable[[], Awaitable[T]]) -> T:
    """A `tool`, `http` or `python` attempt through the gate: admitted first (or StepThrottled), settled after
    (a failure's Retry-After and 429 tighten the limit; a concurrency hold is released however it ends).

    A 429 on a limited call is waiting, not failing: the limit is tightened and the step parks as throttled
    (same attempt), at most MAX_LIMITED_429 times in a row; then the 429 fails the attempt like any error."""
    permit = await gate.before_step(call_key)
    if permit is None:
        return await call()
    try:
        result = await call()
    except StepFailed as exc:
        await permit.done(status=exc.status, observation=Observation(retry_after=exc.retry_after), wait=True)
        seen = _recent_429.pop(call_key, 0) + 1 if exc.status == 429 else 0
        if exc.status == 429 and seen < MAX_LIMITED_429 and permit.limits:
            if len(_recent_429) > 10_000:
                _recent_429.clear()
            _recent_429[call_key] = seen
            pause = max(exc.retry_after or 0.0, 0.5)
            raise StepThrottled(permit.limits[0], time.time() + pause, pause) from exc
        raise
    except BaseException:
        await permit.done()
        raise
    _recent_429.pop(call_key, None)
    await permit.done()
    return result
