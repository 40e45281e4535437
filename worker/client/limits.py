"""RuntimeClient, part limits: the operator's limits (`limits.yaml`) and how the fleet uses them right now.

`limits()` reads the limits file of this client's workflows directory (`AGENTRT_WORKFLOWS_DIR`), each limit's
buckets and counters from Redis (use in the current window, what could leave now, calls in flight, steps
waiting, 429s seen), and from Postgres where each live worker keeps its buckets (`redis`: shared; `fallback`:
Redis was unreachable and the worker enforces its own share). Limits found in Redis but not in the file (another
directory's, or removed) are listed too. Plain frozen dataclasses, for the CLI and the console.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from worker.client.base import ClientBase
from worker.limits.file import OperatorLimits
from worker.limits.redis_buckets import RawStatus, RedisBuckets, limit_tag
from worker.limits.spec import Buckets, LimitSpec, buckets


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """One limit: what limits.yaml says, and its use across the fleet (None: not known, e.g. Redis down)."""

    name: str
    requests: str | None
    """The request rate as written, `500/min`."""
    tokens: str | None
    concurrency: int | None
    burst: int | None
    """Requests that may leave at once."""
    match: dict[str, str] | None
    """LLM calls it applies to without the step naming it (provider, model, host patterns)."""
    window: str
    """The window the `window_*` counts are for: s, min, h or day."""
    window_requests: int | None
    window_tokens: int | None
    """Tokens used (settled) in the current window."""
    available_requests: int | None
    """Requests that could leave right now."""
    available_tokens: int | None
    in_flight: int | None
    """Calls holding a concurrency slot."""
    waiting: int | None
    """Steps waiting for this limit."""
    granted: int | None
    """Calls let through, in all."""
    throttled: int | None
    """Times a call had to wait."""
    rejected_429: int | None
    """429s the provider answered to calls under this limit."""
    last_429_at: datetime | None
    defined: bool = True
    """False: found in Redis, but not in this limits.yaml."""


@dataclass(frozen=True, slots=True)
class WorkerLimitsMode:
    worker_id: str
    mode: str | None
    """redis | fallback | None (a worker of a version without limits)."""
    since: datetime | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class LimitsReport:
    limits: tuple[LimitInfo, ...]
    mode: str
    """redis: every live worker shares the buckets in Redis; fallback: every one enforces its own share; mixed:
    some do; unknown: no live worker says."""
    workers: tuple[WorkerLimitsMode, ...]
    file: str | None
    """The limits.yaml read (None: there is none in the workflows directory)."""
    file_error: str | None
    """Why that file is invalid (the workers keep its previous good version)."""
    redis_error: str | None
    """Why this client could not read the counters (they are None then)."""


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def _info(name: str, spec: LimitSpec | None, b: Buckets | None, raw: RawStatus | None) -> LimitInfo:
    period = b.period if b is not None else 60.0
    window = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}.get(period, f"{period:g}s")
    fields: dict[str, Any] = {k: None for k in ("window_requests", "window_tokens", "available_requests",
                                                "available_tokens", "in_flight", "waiting", "granted", "throttled",
                                                "rejected_429", "last_429_at")}
    if raw is not None:
        current = raw.window == math.floor(raw.now / period)
        fields.update(window_requests=raw.window_requests if current else 0,
                      window_tokens=raw.window_tokens if current else 0, in_flight=raw.holders, waiting=raw.waiting,
                      granted=raw.granted, throttled=raw.throttled, rejected_429=raw.rejected_429,
                      last_429_at=_when(raw.last_429))
        if b is not None and b.interval > 0 and raw.tat is not None:
            ready = math.floor((raw.now + b.tolerance - raw.tat) / b.interval) + 1
            fields["available_requests"] = max(0, min(b.burst, ready))
        if b is not None and b.token_rate > 0 and raw.level is not None:
            level = raw.level + max(0.0, raw.now - (raw.level_ts or raw.now)) * b.token_rate
            fields["available_tokens"] = math.floor(max(0.0, min(b.token_capacity, level)))
    match = None
    if spec is not None and spec.match is not None:
        match = {k: v for k, v in spec.match.model_dump().items() if v is not None}
    return LimitInfo(name=name, requests=spec.requests.text if spec and spec.requests else None,
                     tokens=spec.tokens.text if spec and spec.tokens else None,
                     concurrency=spec.concurrency if spec else None, burst=b.burst if b and b.interval else None,
                     match=match, window=window, defined=spec is not None, **fields)


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    """A workflow's `budget:` (its current version) and what its LLM calls spent today (UTC)."""

    workflow: str
    tokens_per_run: int | None
    usd_per_run: float | None
    usd_per_day: float | None
    on_exceed: str
    spent_today_usd: float
    calls_today: int
    asking: int
    """Runs waiting for a person to answer a budget question."""


class LimitsApi(ClientBase):
    """`limits()`: the operator's limits and their use across the fleet; `budgets()`: the workflows' budgets."""

    async def budgets(self) -> list[BudgetInfo]:
        rows = await self.pool.fetch(
            """SELECT DISTINCT ON (f.name) f.name, d.spec -> 'budget' AS budget
                 FROM workflow_files f JOIN definitions d ON d.def_hash = f.def_hash
                WHERE f.status <> 'deleted' AND d.spec ? 'budget'
                ORDER BY f.name, f.updated_at DESC""")
        out: list[BudgetInfo] = []
        for r in rows:
            if not self.authorizer.allowed(self.identity, "view", r["name"]) or not isinstance(r["budget"], dict):
                continue
            b = r["budget"]
            spent = await self.pool.fetchrow(
                """SELECT coalesce(sum(usd), 0)::float8 AS usd, count(*) AS calls FROM llm_spend
                    WHERE workflow = $1 AND at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'""",
                r["name"])
            asking = await self.pool.fetchval(
                """SELECT count(DISTINCT t.run_id) FROM human_tasks t JOIN runs ON runs.run_id = t.run_id
                    WHERE runs.workflow = $1 AND t.task_key = 'budget' AND t.status = 'pending'""", r["name"])
            out.append(BudgetInfo(r["name"], b.get("tokens_per_run"), b.get("usd_per_run"), b.get("usd_per_day"),
                                  b.get("on_exceed", "ask"), float(spent["usd"]), int(spent["calls"]), int(asking)))
        return out

    async def limits(self) -> LimitsReport:
        source = OperatorLimits(self.settings.workflows_dir)
        specs = source.current().limits
        names = set(specs)
        raw: dict[str, RawStatus] = {}
        redis_error = None
        try:
            store = RedisBuckets(self.redis, self.settings.redis_prefix)
            names |= await self._names_in_redis()
            for name in sorted(names):
                raw[name] = await store.status(name)
        except (RedisError, OSError) as exc:
            redis_error = f"{type(exc).__name__}: {exc}"
        rows = await self.pool.fetch(
            """SELECT worker_id, limits_mode, limits_mode_since, limits_mode_reason FROM workers
                WHERE stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => $1) ORDER BY worker_id""",
            max(10.0, 2 * self.settings.lease_ttl))
        workers = tuple(WorkerLimitsMode(r["worker_id"], r["limits_mode"], r["limits_mode_since"],
                                         r["limits_mode_reason"]) for r in rows)
        modes = {w.mode for w in workers if w.mode}
        mode = "unknown" if not modes else modes.pop() if len(modes) == 1 else "mixed"
        limits = tuple(_info(name, specs.get(name), buckets(name, specs[name]) if name in specs else None,
                             raw.get(name)) for name in sorted(names))
        return LimitsReport(limits, mode, workers, str(source.path) if source.path else None,
                            str(source.error) if source.error else None, redis_error)

    async def _names_in_redis(self) -> set[str]:
        """Limits whose counters are in Redis (some worker used them)."""
        head = limit_tag(self.settings.redis_prefix, "")[:-1]  # "{prefix:limit:"
        found: set[str] = set()
        async for key in self.redis.scan_iter(match=head.replace("[", "\\[") + "*}:stats", count=500):
            text = key.decode() if isinstance(key, bytes) else str(key)
            found.add(text[len(head):-len("}:stats")])
        return found
