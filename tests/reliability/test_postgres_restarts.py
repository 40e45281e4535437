"""Postgres restarts (fast shutdowns and kill -9, with downtime) under load: runs complete, no worker dies, no checkpoint is lost
(every step of every run completed exactly once in the event log)."""

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
