"""The `llm_spend` ledger (migration 0012): what a workflow's LLM calls cost, per run and per UTC day."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Spent:
    run_tokens: int
    run_usd: float
    day_usd: float
    """The workflow's spend since 00:00 UTC (all its runs)."""


async def lock_txn(conn: asyncpg.Connection, workflow: str) -> None:
    """Serialize the budget checks of one workflow (transaction-scoped: safe behind a transaction pooler)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentrt-budget:' || $1))", workflow)


async def spent_txn(conn: asyncpg.Connection, run_id: str, workflow: str, *, besides: str) -> Spent:
    """What the run and the workflow's day have spent, without the call `besides` (its own earlier try)."""
    row = await conn.fetchrow(
        """SELECT coalesce(sum(tokens) FILTER (WHERE run_id = $1), 0)::bigint AS run_tokens,
                  coalesce(sum(usd) FILTER (WHERE run_id = $1), 0)::float8 AS run_usd,
                  coalesce(sum(usd) FILTER (WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC')
                                                          AT TIME ZONE 'UTC'), 0)::float8 AS day_usd
           FROM llm_spend
           WHERE workflow = $2 AND call_key <> $3
             AND (run_id = $1 OR at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')""",
        run_id, workflow, besides)
    return Spent(int(row["run_tokens"]), float(row["run_usd"]), float(row["day_usd"]))


async def reserve_txn(conn: asyncpg.Connection, call_key: str, run_id: str, workflow: str, tokens: int,
                      usd: float) -> None:
    await conn.execute(
        """INSERT INTO llm_spend (call_key, run_id, workflow, tokens, usd) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (call_key) DO UPDATE SET tokens = EXCLUDED.tokens, usd = EXCLUDED.usd, at = now(),
                                                settled = false""",
        call_key, run_id, workflow, tokens, usd)


async def settle(pool: asyncpg.Pool, call_key: str, tokens: int, usd: float) -> None:
    """The call's real usage (zero: it failed before the provider billed anything)."""
    await pool.execute("UPDATE llm_spend SET tokens = $2, usd = $3, settled = true WHERE call_key = $1",
                       call_key, tokens, usd)


async def run_spend(pool: asyncpg.Pool, run_id: str) -> tuple[int, float]:
    row = await pool.fetchrow(
        "SELECT coalesce(sum(tokens), 0)::bigint AS t, coalesce(sum(usd), 0)::float8 AS u FROM llm_spend "
        "WHERE run_id = $1", run_id)
    return int(row["t"]), float(row["u"])
