"""Exactly once across workers: two real worker processes racing on one database fire each tick once, and a
worker killed between a tick and its run's creation loses nothing (another fires that tick, once)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg

from tests.schedules.support import gaps, runs_per_tick, schedule_row, statuses, tick_times, ticker, ticks
from tests.support.runtime import eventually, write_workflow
from tests.support.services import WorkerProc, WorkerProcs
from worker.config import Settings

RACERS = ("race-a", "race-b", "race-c")


async def test_two_workers_racing_fire_each_tick_exactly_once(settings: Settings, worker_procs: WorkerProcs) -> None:
    for name in RACERS:
        write_workflow(settings, f"{name}.yaml", ticker(name, catch_up="all"))
    first = worker_procs.start(name="a")
    second = worker_procs.start(name="b")
    first.wait_for_log("worker test-a")
    second.wait_for_log("worker test-b")
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async def both_racing_for(n: int) -> bool:
            return all([len(await ticks(pool, name)) >= n for name in RACERS])

        await eventually(lambda: both_racing_for(8), 40, what="eight ticks of each schedule")
        first.stop()
        second.stop()
        fired = {name: await ticks(pool, name) for name in RACERS}
        counts = {name: await runs_per_tick(pool, name) for name in RACERS}
        runs = await pool.fetchval("SELECT count(*) FROM runs WHERE requested_by LIKE 'schedule:%'")
    finally:
        await pool.close()
    fired_by: Counter[str] = Counter()
    for name in RACERS:
        times = [t["tick_at"] for t in fired[name]]
        assert not gaps(times), (name, gaps(times))  # none lost while both ran
        assert set(counts[name].values()) == {1}, counts[name]  # none started twice
        assert sorted(counts[name]) == [t.isoformat() for t in times]  # each tick row has its one run
        fired_by.update(t["fired_by"].split("-")[1] for t in fired[name])
    assert runs == sum(len(f) for f in fired.values())
    assert set(fired_by) <= {"a", "b"}


def armed(point: str, marker: Path) -> dict[str, str]:
    return {"AGENTRT_FAULT_POINT": point, "AGENTRT_FAULT_MARKER": str(marker), "AGENTRT_FAULT_AFTER": "1"}


async def wait_dead(proc: WorkerProc, timeout: float = 30) -> None:
    for _ in range(int(timeout * 20)):
        if not proc.alive():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {proc.name} did not crash at its fault point:\n{proc.log_tail()}")


async def test_a_worker_killed_between_a_tick_and_its_run_loses_nothing(
        settings: Settings, worker_procs: WorkerProcs, tmp_path: Path) -> None:
    marker = tmp_path / "fired"
    write_workflow(settings, "crashy.yaml", ticker("crashy", catch_up="all"))
    doomed = worker_procs.start(extra_env=armed("schedule-before-insert", marker), name="doomed")
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        await wait_dead(doomed)
        assert marker.read_text().split() == ["schedule-before-insert"]
        # it had written the tick's row, in the transaction that died with it: nothing committed
        lost_tick = (await schedule_row(pool, "crashy"))["next_fire_at"]
        assert await ticks(pool, "crashy") == [] and not await runs_per_tick(pool, "crashy")
        await asyncio.sleep(1.5)  # the tick is now overdue: catch_up all still fires it

        worker_procs.start(name="heir")

        async def caught_up() -> bool:
            done = await statuses(pool, "crashy")
            return len(await ticks(pool, "crashy")) >= 4 and done["completed"] >= 4

        await eventually(caught_up, 40, what="the heir firing the lost tick and more")
        times = await tick_times(pool, "crashy")
        counts = await runs_per_tick(pool, "crashy")
        run_of_lost = await pool.fetchval(
            "SELECT status FROM runs r JOIN schedule_ticks t ON t.run_id = r.run_id WHERE t.tick_at = $1", lost_tick)
    finally:
        await pool.close()
    assert times[0] == lost_tick and not gaps(times)
    assert set(counts.values()) == {1} and len(counts) == len(times)
    assert run_of_lost in ("completed", "running", "pending")
