"""Redis is transport: kill -9 (with and without AOF), a restart from an older snapshot and a short
outage lose no run, and the worker processes stay up while Redis is away."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.chaos import chaos_stack, redis_fault


def _check(f: dict[str, Any]) -> None:
    assert f["runs_completed"] == f["runs_started"], f
    assert f["workers_alive"] == f["workers"], f
    assert f["steps_completed_twice"] == 0 and f["runs_missing_steps"] == 0, f
    assert f["distinct_effects"] == f["expected_effects"], f
    assert f["xpending_after"] == 0, f
    assert f["restore_s"] < 60, f


@pytest.mark.parametrize(("mode", "stack_args"), [
    ("kill9", {}),
    ("kill9", {"redis_appendonly": True}),
    ("old-snapshot", {"redis_save": True}),
    ("outage", {"redis_appendonly": True}),
], ids=["kill9-no-persistence", "kill9-aof", "older-rdb-snapshot", "5s-outage"])
async def test_redis_fault_loses_no_run(mode: str, stack_args: dict[str, Any]) -> None:
    async with chaos_stack(**stack_args) as stack:
        f = await redis_fault(stack, mode, outage=5.0, runs=6)
    _check(f)
