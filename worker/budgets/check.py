"""The budget check, run by the worker's limiter before every LLM call (see worker/budgets/__init__.py)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from worker.budgets import ledger
from worker.errors import StepFailed, StepParked

logger = logging.getLogger(__name__)

TASK_KEY = "budget"
"""The key of the human task a budget asks (one question per step; an approval counts for the whole run)."""
BUDGETED_KINDS = frozenset({"llm", "agent"})


def _usd(value: float) -> str:
    """$50.00, $0.05, $0.035, $0.0125: cents always, up to four decimals when they matter."""
    whole, frac = f"{value:,.4f}".split(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def over_budget(budget: Any, spent: ledger.Spent, tokens: int, usd: float) -> str | None:
    """Which budget the call would take over, as a sentence; None when it fits."""
    if budget.tokens_per_run is not None and spent.run_tokens + tokens > budget.tokens_per_run:
        return (f"{budget.tokens_per_run:,} tokens per run (spent {spent.run_tokens:,}, this call up to "
                f"{tokens:,})")
    if budget.usd_per_run is not None and spent.run_usd + usd > budget.usd_per_run:
        return f"{_usd(budget.usd_per_run)} per run (spent {_usd(spent.run_usd)}, this call up to {_usd(usd)})"
    if budget.usd_per_day is not None and spent.day_usd + usd > budget.usd_per_day:
        return f"{_usd(budget.usd_per_day)}/day (spent {_usd(spent.day_usd)} today, this call up to {_usd(usd)})"
    return None


class BudgetCheck:
    """`await check(info)` before a call (a `PreCallCheck`); `await settle(...)` after it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._unpriced: set[str] = set()

    def applies(self, kind: str, budget: Any) -> bool:
        """Only calls of budgeted kinds of workflows with a `budget:` (the gate skips the others)."""
        return budget is not None and kind in BUDGETED_KINDS

    async def __call__(self, info: Any) -> None:
        budget = getattr(info, "budget", None)
        if budget is None or info.kind not in BUDGETED_KINDS:
            return
        usd = info.cost_usd
        if usd is None:
            usd = 0.0
            if (budget.usd_per_run is not None or budget.usd_per_day is not None) and info.model not in self._unpriced:
                self._unpriced.add(str(info.model))
                logger.warning("budget of %s: no price for model %s (pricing:); its calls count as $0",
                               info.workflow, info.model)
        async with self.pool.acquire() as conn, conn.transaction():
            await ledger.lock_txn(conn, info.workflow)
            spent = await ledger.spent_txn(conn, info.run_id, info.workflow, besides=info.call_key)
            over = over_budget(budget, spent, info.tokens, usd)
            if over is not None:
                await self._refuse(conn, info, budget, over, spent)
            await ledger.reserve_txn(conn, info.call_key, info.run_id, info.workflow, info.tokens, usd)

    async def _refuse(self, conn: asyncpg.Connection, info: Any, budget: Any, over: str, spent: ledger.Spent) -> None:
        """Over budget: go on if a human allowed this run; else fail, or ask (`on_exceed`)."""
        decided = await conn.fetch(
            """SELECT step_id, item, status, decided_by, reason FROM human_tasks
               WHERE run_id = $1 AND task_key = $2 AND status IN ('approved', 'rejected')""", info.run_id, TASK_KEY)
        if any(d["status"] == "approved" for d in decided):
            return  # "allow this run": a person let it go on past its budgets
        what = f"budget exceeded: {over} for {info.workflow}"
        mine = next((d for d in decided if d["step_id"] == info.step_id and d["item"] == info.item), None)
        if mine is not None:
            raise StepFailed(f"{what}; rejected by {mine['decided_by']}"
                             + (f": {mine['reason']}" if mine["reason"] else ""), retryable=False)
        if budget.on_exceed == "fail":
            raise StepFailed(f"{what} (on_exceed: fail)", retryable=False)
        raise StepParked(TASK_KEY, f"{what}. Raise the budget in the workflow file, approve to let this run go on "
                                   "past its budgets, or reject to fail the step.",
                         context={"budget": budget.model_dump(exclude_none=True), "spent": {
                             "run_tokens": spent.run_tokens, "run_usd": round(spent.run_usd, 6),
                             "day_usd": round(spent.day_usd, 6)},
                             "call": {"model": info.model, "tokens": info.tokens, "usd": info.cost_usd}})

    async def settle(self, call_key: str, tokens: int, usd: float | None) -> None:
        try:
            await ledger.settle(self.pool, call_key, tokens, usd or 0.0)
        except (asyncpg.PostgresError, OSError) as exc:  # the estimate stays: budgets err on the safe side
            logger.warning("budget: cannot settle call %s (%s); its estimate stands", call_key, exc)
