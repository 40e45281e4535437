"""Liveness with a zombie frozen inside a Postgres transaction.

Only one worker reconciles at a time (`pg_try_advisory_xact_lock(7411)`). Runs held by a worker that
dies are re-derived only by the reconciler (their stream entries were acknowledged when they were
leased), so a process frozen (SIGSTOP, a VM pause) while it holds that lock must not stop every
takeover. Two defences: `store.reconcile` is a single statement (the lock is never held between
statements), and the worker's connections set `idle_in_transaction_session_timeout` (60 s), so
Postgres ends any transaction a frozen process leaves open.

The frozen process is reproduced by a connection that holds the lock inside an open transaction,
with the same setting as the worker's pool, scaled down to 2 s to keep the test short.
"""

from __future__ import annotations

import asyncpg

from tests.support.chaos import chaos_stack, until
from tests.support.runtime import http_chain


async def test_runs_of_a_dead_worker_are_taken_over_while_another_is_frozen_mid_reconcile() -> None:
    async with chaos_stack() as stack:
        for i in range(1, 6):
            stack.sink.set_delay(f"/step{i}", 0.3)
        stack.write("chain.yaml", http_chain(5))
        victim = stack.start_worker("victim")
        await stack.wait_ready(victim)
        await stack.wait_workflows({"chain"})
        runs = [await stack.client.start_run("chain", {"sink": stack.sink.url}) for _ in range(3)]
        assert await stack.sink.wait_for_async(lambda s: s.count("/step2") >= 3, 30)
        frozen = await asyncpg.connect(stack.settings.database_url,
                                       server_settings={"idle_in_transaction_session_timeout": "2000"})
        tx = frozen.transaction()
        await tx.start()
        assert await frozen.fetchval("SELECT pg_try_advisory_xact_lock(7411)")  # ...and then SIGSTOP
        try:
            victim.kill()
            heir = stack.start_worker("heir")
            await stack.wait_ready(heir)

            async def all_done() -> bool:
                n = await stack.client.pool.fetchval(
                    "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND status = 'completed'", runs)
                return n == len(runs)

            await until(all_done, 12, "the dead worker's runs completed by the heir")
        finally:
            frozen.terminate()  # Postgres already ended its transaction; nothing to roll back
