"""kill -9 of workers at random moments while 50 ten-step runs are kept in flight on 3 workers."""

from __future__ import annotations

from tests.support.chaos import chaos_stack, worker_crashes


async def test_random_kill9_loses_no_run_and_repeats_no_effect() -> None:
    async with chaos_stack() as stack:
        f = await worker_crashes(stack, kills=5, workers=3, concurrency=50, steps=10, step_delay=0.3,
                                 kill_gap=(0.5, 2.0), drain_timeout=150)
    assert f["runs_started"] >= 50
    assert f["completed_ratio"] == 1.0, f
    # every step of every run committed exactly once, and the sink saw one effect per (run, step)
    assert f["steps_completed_twice"] == 0, f
    assert f["runs_missing_steps"] == 0, f
    assert f["started_before_predecessor"] == 0, f  # a dependent never started before the commit
    assert f["distinct_effects"] == f["expected_effects"], f
    assert f["unexpected_keys"] == 0, f
    # only calls in flight at a kill are sent again (same key): at most a handful per kill
    assert f["duplicate_requests"] <= f["kills"] * f["concurrency"], f
    assert f["kills_of_workers_holding_runs"] >= 1 and f["recovery_max_s"] < 60, f
    assert f["workers_alive_at_end"] == 3
