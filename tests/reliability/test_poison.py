"""Poison work: a step that always fails, or always times out, uses exactly its attempts, backs off
between them, fails the run, and leaves nothing pending in the work stream."""

from __future__ import annotations

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
