"""Poison work: a step that always fails, or always times out, uses exactly its attempts, backs off
between them, fails the run, and leaves nothing pending in the work stream."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.chaos import chaos_stack, poison


async def test_poison_steps_fail_the_run_without_a_hot_loop() -> None:
    async with chaos_stack() as stack:
        f = await poison(stack, runs=2, attempts=3, idle=3.0)
    assert f["runs_failed"] == f["runs"], f
    assert f["attempts_min"] == f["attempts_max"] == f["max_attempts"], f
    assert f["sink_requests"] == f["expected_sink_requests"], f
    assert f["never_started"] == 0 and f["never_requests"] == 0, f
    # backoff honoured: initial_interval is 200ms (jitter may shorten it, never to a hot loop)
    assert f["min_gap_between_attempts_s"] >= 0.05, f
    assert f["requests_while_idle"] == 0 and f["events_while_idle"] == 0, f
    assert f["xpending_after"] == 0, f
    assert f["workers_alive"] == 2, f


HANG_TASKS = '''
import time

def hang():
    time.sleep(12)  # a sync function stuck in a call without a timeout of its own

def noop():
    return "ok"
'''


async def test_python_step_that_always_times_out_does_not_starve_the_worker() -> None:
    """Sync `python` steps run in threads that a timeout cannot stop. Timed-out attempts that are still
    running must not take the threads that other runs' steps (and the worker itself: hot reload, Vault
    reads, DNS) need."""
    import time

    from tests.support.chaos import until

    async with chaos_stack() as stack:
        stack.write("hang_tasks.py", HANG_TASKS)
        stack.write("hang.yaml", """
            name: hang
            steps:
              - id: stuck
                uses: python
                timeout: 300ms
                with: {function: "hang_tasks:hang"}
                retry: {max_attempts: 3, initial_interval: 100ms, backoff: 1.0}
        """)
        stack.write("healthy.yaml", """
            name: healthy
            steps:
              - {id: a, uses: python, with: {function: "hang_tasks:noop"}}
        """)
        worker = stack.start_worker("w")
        await stack.wait_ready(worker)
        await stack.wait_workflows({"hang", "healthy"})
        poisoned = [await stack.client.start_run("hang") for _ in range(3)]
        for run_id in poisoned:  # 3 runs x 3 attempts: 9 threads stuck in time.sleep
            assert (await stack.client.wait_for_run(run_id, timeout=30)).status.value == "failed"
        t0 = time.monotonic()
        healthy = await stack.client.start_run("healthy")
        stack.write("late.yaml", "name: late\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")

        async def run_healthy() -> tuple[Any, float]:
            summary = await stack.client.wait_for_run(healthy, timeout=60)
            return summary, time.monotonic() - t0

        (summary, healthy_s), reload_s = await asyncio.gather(
            run_healthy(), until(lambda: _active(stack, "late"), 60, "late.yaml loaded"))
        assert worker.alive()
    assert summary.status.value == "completed"
    assert healthy_s < 5 and reload_s < 5, (healthy_s, reload_s)


async def _active(stack, name: str) -> bool:  # type: ignore[no-untyped-def]
    return any(w.name == name and w.status == "active" for w in await stack.client.list_workflows())
