"""Postgres restarts (fast shutdowns and kill -9, with downtime) under load: runs complete, no worker
dies, no checkpoint is lost (every step of every run completed exactly once in the event log)."""

from __future__ import annotations

from tests.support.chaos import chaos_stack, postgres_restarts


async def test_postgres_restarts_under_load() -> None:
    async with chaos_stack() as stack:
        f = await postgres_restarts(stack, restarts=3, interval=(3, 6), downtime=(0, 2), concurrency=15,
                                    workers=2, steps=10, step_delay=0.1)
    assert f["runs_started"] > 0
    assert f["completed_ratio"] == 1.0, f
    assert f["workers_alive"] == f["workers"], f
    assert f["steps_completed_twice"] == 0, f
    assert f["runs_missing_steps"] == 0, f
    assert f["started_before_predecessor"] == 0, f  # a dependent never started before the commit
    assert f["distinct_effects"] == f["expected_effects"], f


PAY = """
name: pay
inputs: {sink: {type: string}}
steps:
  - {id: before, uses: http, with: {url: "${{ inputs.sink }}/pay/before"}}
  - id: charge
    uses: http
    idempotent: false
    with: {method: POST, url: "${{ inputs.sink }}/pay/charge", json: {amount: 10}}
  - {id: after, uses: http, with: {url: "${{ inputs.sink }}/pay/after"}}
"""


async def test_non_idempotent_calls_are_never_resent_across_postgres_restarts() -> None:
    """A call marked idempotent: false whose outcome a Postgres outage made uncertain is parked for a
    human, never sent again on its own: every charge key reaches the sink exactly once."""
    import asyncio
    from collections import Counter

    from tests.support.chaos import Load, until

    async with chaos_stack() as stack:
        stack.sink.set_delay("/pay/charge", 0.2)
        stack.write("pay.yaml", PAY)
        procs = [stack.start_worker() for _ in range(2)]
        for p in procs:
            await stack.wait_ready(p)
        await stack.wait_workflows({"pay"})
        load = Load(stack, "pay", {"sink": stack.sink.url}, 15).start()
        for i, down in enumerate((0.5, 1.5)):
            await asyncio.sleep(3)
            if i % 2:
                await asyncio.to_thread(stack.pg.kill)
                await asyncio.sleep(down)
                await asyncio.to_thread(stack.pg.start)
            else:
                await asyncio.to_thread(stack.pg.restart, down)
        await asyncio.sleep(1)
        await load.stop()
        await stack.reconnect()

        async def settled() -> bool:
            rows = await stack.client.pool.fetch(
                "SELECT status, waiting_on FROM runs WHERE workflow = 'pay'")
            return all(r["status"] in ("completed", "failed") or r["waiting_on"] == "human" for r in rows)

        await until(settled, 90, "every pay run completed or parked for a human")
        statuses = Counter(r["status"] for r in await stack.client.pool.fetch("SELECT status FROM runs"))
        per_key = Counter(stack.sink.keys("/pay/charge"))
        alive = all(p.alive() for p in procs)
    assert alive
    assert statuses["completed"] > 0 and statuses.get("failed", 0) == 0, statuses
    resent = {k: n for k, n in per_key.items() if n > 1}
    assert not resent, resent
