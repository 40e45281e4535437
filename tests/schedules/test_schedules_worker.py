"""Schedules on a real worker (Postgres, Redis): ticks start runs with the tick in their inputs, follow the file
as it is edited, and catch up after downtime as their policy says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.schedules.support import gaps, runs_per_tick, schedule_row, statuses, tick_times, ticker, ticks
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from worker.config import Settings


async def test_every_second_starts_runs_that_complete_with_the_tick_in_their_inputs(settings: Settings) -> None:
    write_workflow(settings, "ticker.yaml", ticker("ticker"))
    async with running_worker(settings), client_for(settings) as client:
        async def three_completed() -> bool:
            return (await statuses(client.pool, "ticker"))["completed"] >= 3

        await eventually(three_completed, 20, what="three scheduled runs completed")
        fired = [t for t in await ticks(client.pool, "ticker") if t["run_id"]]
        info = (await client.list_schedules())[0]
        for tick in fired[:3]:
            detail = await client.get_run(tick["run_id"])
            if detail.summary.status.value != "completed":
                continue
            expected = {"tick": tick["tick_at"].isoformat(), "at": int(tick["tick_at"].timestamp())}
            assert detail.inputs == expected and detail.output == expected
            created = detail.events[0]
            assert created.type == "run.created"
            assert created.data["trigger"] == {"kind": "schedule", "workflow": "ticker", "schedule": "every 1s",
                                               "tick": tick["tick_at"].isoformat()}
            assert created.data["requested_by"] == "schedule:ticker"
        counts = await runs_per_tick(client.pool, "ticker")
        times = await tick_times(client.pool, "ticker")
    assert set(counts.values()) == {1} and len(counts) == len(times)
    assert all(t.microsecond == 0 for t in times) and not gaps(times)
    assert info.workflow == "ticker" and info.schedule == "every 1s" and info.catch_up == "latest"
    assert info.next_fire_at is not None and info.last_fire_at is not None and info.next_fire_at > info.last_fire_at
    assert info.last_run_id is not None and not info.paused


async def test_the_schedule_follows_the_file_and_keeps_its_pause(settings: Settings) -> None:
    path = write_workflow(settings, "pulse.yaml", ticker("pulse"))
    async with running_worker(settings), client_for(settings) as client:
        pool = client.pool
        await eventually(lambda: _fired_at_least(pool, "pulse", 1), 20, what="a first tick")
        first = await schedule_row(pool, "pulse")

        # another version with the same schedule: new runs use it; the schedule goes on where it was
        write_workflow(settings, "pulse.yaml", ticker("pulse", extra_step="{id: more, uses: set, with: {x: 1}}"))

        async def moved() -> bool:
            return (await schedule_row(pool, "pulse"))["def_hash"] != first["def_hash"]

        await eventually(moved, 15, what="the schedule row to follow the new version")
        count = len(await ticks(pool, "pulse"))
        await eventually(lambda: _fired_at_least(pool, "pulse", count + 2), 15, what="ticks on the new version")
        assert not gaps(await tick_times(pool, "pulse"))  # the edit cost no tick

        await client.pause_schedule("pulse", "maintenance window")
        await asyncio.sleep(0.3)  # a pass that started before the pause may still commit its tick
        paused_count = len(await ticks(pool, "pulse"))

        # a new cadence while paused: next fire recomputed on the new grid, still paused
        write_workflow(settings, "pulse.yaml", ticker("pulse", every="2s"))

        async def respaced() -> bool:
            return (await schedule_row(pool, "pulse"))["spec"]["every"] == 2

        await eventually(respaced, 15, what="the new cadence")
        row = await schedule_row(pool, "pulse")
        assert row["paused"] and row["paused_reason"] == "maintenance window"
        assert row["next_fire_at"].timestamp() % 2 == 0
        await asyncio.sleep(2.5)
        assert len(await ticks(pool, "pulse")) == paused_count  # nothing fires while paused
        assert (await client.list_schedules())[0].schedule == "every 2s"

        await client.resume_schedule("pulse")
        await eventually(lambda: _fired_at_least(pool, "pulse", paused_count + 2), 15, what="ticks after resuming")
        after = (await tick_times(pool, "pulse"))[paused_count:]
        assert all(t.timestamp() % 2 == 0 for t in after) and not gaps(after, 2.0)

        # the schedule removed from the file: the row is kept but inactive, no tick fires
        write_workflow(settings, "pulse.yaml", "name: pulse\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")

        async def unscheduled() -> bool:
            return not (await schedule_row(pool, "pulse"))["active"]

        await eventually(unscheduled, 15, what="the schedule to be dropped")
        count = len(await ticks(pool, "pulse"))
        assert await client.list_schedules() == []
        await asyncio.sleep(2.2)
        assert len(await ticks(pool, "pulse")) == count

        # back, paused by someone, then the file deleted: inactive; back again: still paused
        write_workflow(settings, "pulse.yaml", ticker("pulse"))
        await eventually(lambda: _active(pool, "pulse"), 15, what="the schedule back")
        await client.pause_schedule("pulse", "noisy")
        path.unlink()
        await eventually(unscheduled, 15, what="the deleted file's schedule dropped")
        write_workflow(settings, "pulse.yaml", ticker("pulse"))
        await eventually(lambda: _active(pool, "pulse"), 15, what="the schedule back again")
        row = await schedule_row(pool, "pulse")
        assert row["paused"] and row["paused_reason"] == "noisy"
        assert set((await runs_per_tick(pool, "pulse")).values()) == {1}


async def test_catch_up_after_the_only_worker_was_down(settings: Settings) -> None:
    for policy in ("all", "latest", "none"):
        write_workflow(settings, f"{policy}.yaml", ticker(f"catch-{policy}", catch_up=policy))
    names = [f"catch-{policy}" for policy in ("all", "latest", "none")]
    async with client_for(settings) as client:
        pool = client.pool
        async with running_worker(settings):
            for name in names:
                await eventually(lambda n=name: _fired_at_least(pool, n, 2), 20, what=f"{name} firing")
        before = {name: (await tick_times(pool, name))[-1] for name in names}
        await asyncio.sleep(4.5)  # no worker: about four ticks of each schedule come due
        restarted = datetime.now(tz=UTC)
        async with running_worker(settings):
            for name in names:
                await eventually(lambda n=name: _fired_after(pool, n, restarted, 2), 20, what=f"{name} after")
        fired = {name: await tick_times(pool, name) for name in names}
        rows = {name: await schedule_row(pool, name) for name in names}
        counts = {name: await runs_per_tick(pool, name) for name in names}
    # all: every tick of the downtime fired once, none lost
    assert not gaps(fired["catch-all"]), gaps(fired["catch-all"])
    assert rows["catch-all"]["skipped_ticks"] == 0
    for name in ("catch-latest", "catch-none"):
        resumed = [t for t in fired[name] if t > before[name]]
        # latest: only the most recent missed tick (at most one second old at the restart); none: not even
        # that unless it was still on time (within its one-second interval). The ones before it: skipped
        assert resumed[0] - before[name] >= timedelta(seconds=3), (name, before[name], resumed[:3])
        assert rows[name]["skipped_ticks"] >= 2 and not gaps(resumed)
    for name in names:
        assert set(counts[name].values()) == {1} and len(counts[name]) == len(fired[name])


async def test_catch_up_policies_after_three_days_of_downtime(settings: Settings) -> None:
    async with client_for(settings) as client:
        now: datetime = await client.pool.fetchval("SELECT now()")
        at = (now - timedelta(minutes=10)).astimezone(UTC)  # today's tick is ten minutes old: late for `none`
        for policy in ("all", "latest", "none"):
            write_workflow(settings, f"{policy}.yaml", f"""
                name: daily-{policy}
                inputs: {{day: {{type: string}}}}
                on:
                  schedule:
                    cron: "{at.minute} {at.hour} * * *"
                    catch_up: {policy}
                    inputs: {{day: "${{{{ tick }}}}"}}
                steps:
                  - {{id: a, uses: set, with: {{day: "${{{{ inputs.day }}}}"}}}}
                """)
        names = [f"daily-{policy}" for policy in ("all", "latest", "none")]
        async with running_worker(settings):
            await eventually(lambda: _all_scheduled(client.pool, names), 20, what="the schedules synced")
            for name in names:
                assert (await schedule_row(client.pool, name))["next_fire_at"] > now  # tomorrow's tick
            # as if the only worker had been down for three days: the schedules still wait for a tick three days ago
            three_days_ago = at.replace(second=0, microsecond=0) - timedelta(days=3)
            await client.pool.execute("UPDATE schedules SET next_fire_at = $1", three_days_ago)

            async def settled() -> bool:
                return all([(await schedule_row(client.pool, n))["next_fire_at"] > now for n in names])

            await eventually(settled, 20, what="the catch-up")
            fired = {n: await tick_times(client.pool, n) for n in names}
            rows = {n: await schedule_row(client.pool, n) for n in names}
    today = at.replace(second=0, microsecond=0)
    assert fired["daily-all"] == [today - timedelta(days=d) for d in (3, 2, 1, 0)]
    assert rows["daily-all"]["skipped_ticks"] == 0
    assert fired["daily-latest"] == [today] and rows["daily-latest"]["skipped_ticks"] == 3
    assert fired["daily-none"] == [] and rows["daily-none"]["skipped_ticks"] == 4
    for n in names:
        assert rows[n]["next_fire_at"] == today + timedelta(days=1)


async def _fired_at_least(pool, workflow: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await ticks(pool, workflow)) >= n


async def _fired_after(pool, workflow: str, since: datetime, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len([t for t in await tick_times(pool, workflow) if t > since]) >= n


async def _active(pool, workflow: str) -> bool:  # type: ignore[no-untyped-def]
    row = await pool.fetchrow("SELECT active FROM schedules WHERE workflow = $1", workflow)
    return bool(row and row["active"])


async def _all_scheduled(pool, names: list[str]) -> bool:  # type: ignore[no-untyped-def]
    return all([await _active(pool, n) for n in names])
