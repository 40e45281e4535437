"""Liveness with a zombie frozen inside a Postgres transaction.

`store.reconcile` takes `pg_try_advisory_xact_lock(7411)` and then, in a second statement of the same
transaction, re-enqueues unleased runs; only one worker reconciles at a time. A worker frozen between
those statements (SIGSTOP, a VM pause, a long GC pause) keeps its transaction, and so the lock, open:
Postgres ends an idle transaction only when `idle_in_transaction_session_timeout` is set, and the
worker's connections do not set it. Runs held by a worker that then dies are re-derived only by the
reconciler (their stream entries were acknowledged when they were leased), so nobody takes them over
until the frozen worker wakes up.

The frozen worker is reproduced here by a connection that holds the same transaction-level lock,
which is exactly the server-side state a worker stopped inside `reconcile` leaves behind.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.support.chaos import chaos_stack, until
from tests.support.runtime import http_chain


@pytest.mark.xfail(strict=True, reason="a worker frozen inside store.reconcile's transaction holds advisory "
                   "lock 7411 forever (no idle_in_transaction_session_timeout): no other worker reconciles, "
                   "so the runs of a worker that dies meanwhile are never taken over")
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
        frozen = await asyncpg.connect(stack.settings.database_url)
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
            await tx.rollback()
            await frozen.close()
