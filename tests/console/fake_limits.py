"""FakeRuntimeClient, the limits part (issue 17): `limits()` and `budgets()` like worker/client/limits.py.

The fleet's mode is derived from the live workers' modes exactly as the real one derives it (one mode: that one;
several: mixed; none: unknown); with Redis down the counters are None and `redis_error` says why; a limits file
that does not exist gives no limits defined (only those still in "Redis"); budgets are sorted by workflow.
The data: openai-gpt4o busy but with room, helpdesk-api saturated (no request free, every concurrency slot
taken, steps waiting), anthropic quiet, partner-quota only in Redis (removed from the file), web-2 in fallback;
support-triage's daily budget nearly spent with two runs asking.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from worker.client.limits import BudgetInfo, LimitInfo, LimitsReport, WorkerLimitsMode

LIMITS_FILE = "/srv/agentrt/workflows/limits.yaml"
COUNTERS = ("window_requests", "window_tokens", "available_requests", "available_tokens", "in_flight", "waiting",
            "granted", "throttled", "rejected_429", "last_429_at")


def make_limits(now: datetime) -> list[LimitInfo]:
    return [
        LimitInfo("openai-gpt4o", "500/min", "30000/min", None, 475, {"provider": "openai", "model": "gpt-4o*"},
                  "min", 312, 21400, 163, 6100, 0, 12, 18233, 412, 2, now - timedelta(minutes=4)),
        LimitInfo("helpdesk-api", "20/s", None, 10, 19, None, "s", 19, 0, 0, None, 10, 37, 40210, 5120, 0, None),
        LimitInfo("anthropic", "50/min", "40000/min", None, 47, {"host": "api.anthropic.com"}, "min", 3, 1200, 44,
                  38800, 0, 0, 611, 0, 0, None),
        LimitInfo("partner-quota", None, None, None, None, None, "min", 0, 0, None, None, 0, 0, 90, 3, 1,
                  now - timedelta(hours=26), defined=False),
    ]


def make_limit_workers(now: datetime) -> list[WorkerLimitsMode]:
    return [
        WorkerLimitsMode("web-1-4711-a1b2c3", "redis", now - timedelta(hours=6), None),
        WorkerLimitsMode("web-2-5120-d4e5f6", "fallback", now - timedelta(minutes=3),
                         "ConnectionError: Error 111 connecting to redis:6379. Connection refused."),
    ]


def make_budgets() -> list[BudgetInfo]:
    return [
        BudgetInfo("support-triage", 200000, 2.0, 50.0, "ask", 47.8, 1893, 2),
        BudgetInfo("nightly-report", None, None, 10.0, "fail", 1.25, 40, 0),
        BudgetInfo("fan-out", 50000, None, None, "ask", 0.0, 0, 0),
    ]


class FakeLimits:
    """Mixed into FakeRuntimeClient, which supplies `_check`, `clock` and `redis_down`."""

    clock: datetime
    redis_down: bool

    def __init__(self) -> None:
        self.limit_infos = make_limits(self.clock)
        """Each limit's spec and counters, as Redis would answer (undefined ones too)."""
        self.limit_workers = make_limit_workers(self.clock)
        self.limits_file: str | None = LIMITS_FILE
        """None: there is no limits.yaml (set with `no_limits_file`)."""
        self.limits_file_error: str | None = None
        self.budget_infos = make_budgets()

    def _check(self) -> None:
        raise NotImplementedError

    def no_limits_file(self) -> None:
        """No limits.yaml and nothing in Redis either: a fleet that never had limits."""
        self.limits_file = None
        self.limit_infos = []

    async def limits(self) -> LimitsReport:
        self._check()
        infos = [i for i in self.limit_infos if self.limits_file is not None or not i.defined]
        redis_error = None
        if self.redis_down:  # only the file is known: no counters, and no limit found in Redis only
            redis_error = "ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."
            unknown: dict[str, Any] = dict.fromkeys(COUNTERS)
            infos = [replace(i, **unknown) for i in infos if i.defined]
        modes = {w.mode for w in self.limit_workers if w.mode}
        mode = "unknown" if not modes else modes.pop() if len(modes) == 1 else "mixed"
        return LimitsReport(tuple(sorted(infos, key=lambda i: i.name)), mode, tuple(self.limit_workers),
                            self.limits_file, self.limits_file_error, redis_error)

    async def budgets(self) -> list[BudgetInfo]:
        self._check()
        return sorted(self.budget_infos, key=lambda b: b.workflow)
