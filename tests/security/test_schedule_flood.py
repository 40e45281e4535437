"""Hostile schedules: whoever edits `workflows/` cannot make schedules a denial of service, nor a way to evaluate
anything beyond the bounded expression engine.

- A schedule fires at most once a second: `every: 1ms`, `every: 0`, a six-field cron (one with seconds) are
  refused at load with file:line:column, like any invalid file.
- A thousand files that each fire every second do not overload the worker: a pass fires at most
  MAX_FIRES_PER_PASS ticks and stops taking schedules after PASS_TIME_BUDGET, passes with more to do are
  BUSY_PAUSE apart; the schedules that fall behind skip ticks (catch_up latest). The worker's event loop stays
  responsive and an honest run started meanwhile completes.
- A schedule's `inputs:` may read only the tick: secrets, the environment, other runs' data, dunder attributes
  are refused at load; an expression over its work budget is refused at load too; rendered values are data.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.security.harness import Canary
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.errors import DefinitionError
from worker.schedules.loop import BUSY_PAUSE, MAX_FIRES_PER_PASS, PASS_TIME_BUDGET

FLOOD = 1000

HONEST = """
name: honest
steps:
  - {id: only, uses: set, with: {ok: true}}
"""

REFUSED = {
    "too-fast.yaml": ("name: too-fast\non: {schedule: {every: 1ms}}\nsteps:\n  - {id: a, uses: set}\n",
                      2, "below the minimum of 1s"),
    "zero.yaml": ("name: zero\non:\n  schedule:\n    every: 0\nsteps:\n  - {id: a, uses: set}\n", 4,
                  "below the minimum"),
    "seconds.yaml": ('name: seconds\non: {schedule: {cron: "* * * * * *"}}\nsteps:\n  - {id: a, uses: set}\n', 2,
                     "has 6 field(s)"),
}


async def test_a_thousand_every_second_schedules_do_not_overload_the_worker(settings: Settings) -> None:
    for i in range(FLOOD):
        text = f"name: flood-{i:04d}\non: {{schedule: {{every: 1s}}}}\nsteps:\n  - {{id: a, uses: set}}\n"
        (settings.workflows_dir / f"flood-{i:04d}.yaml").write_text(text, encoding="utf-8")
    for filename, (text, _, _) in REFUSED.items():
        (settings.workflows_dir / filename).write_text(text, encoding="utf-8")
    write_workflow(settings, "honest.yaml", HONEST)
    async with running_worker(settings) as service, client_for(settings) as client:
        async def all_scheduled() -> bool:
            return await client.pool.fetchval("SELECT count(*) FROM schedules WHERE active") == FLOOD

        await eventually(all_scheduled, 90, interval=0.5, what="the thousand schedules synced")
        window_start = await client.pool.fetchval("SELECT now()")
        lags: list[float] = []

        async def probe() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.05)
                lags.append(time.monotonic() - t - 0.05)

        prober = asyncio.create_task(probe())
        honest: list[float] = []
        try:
            deadline = time.monotonic() + 8.0
            while time.monotonic() < deadline:
                started = time.monotonic()
                run_id = await client.start_run("honest")
                summary = await client.wait_for_run(run_id, timeout=30, poll=0.05)
                assert summary.status.value == "completed", summary.error
                honest.append(time.monotonic() - started)
        finally:
            prober.cancel()
        window_end = await client.pool.fetchval("SELECT now()")
        per_second = await client.pool.fetch(
            """SELECT date_trunc('second', fired_at) AS s, count(*) AS n FROM schedule_ticks
                WHERE fired_at BETWEEN $1 AND $2 GROUP BY 1 ORDER BY 1""", window_start, window_end)
        skipped = await client.pool.fetchval("SELECT sum(skipped_ticks) FROM schedules")
        duplicates = await client.pool.fetchval(
            """SELECT count(*) FROM (SELECT e.data -> 'trigger' ->> 'tick', r.workflow FROM events e
                JOIN runs r ON r.run_id = e.run_id WHERE e.seq = 1 AND r.requested_by LIKE 'schedule:%'
                GROUP BY 1, 2 HAVING count(*) > 1) d""")
        workflows = {w.name or w.path.rsplit("/", 1)[-1]: w for w in await client.list_workflows()}
        longest = service.schedules.longest_pass
    # work per pass is bounded, whatever the files ask for
    ceiling = MAX_FIRES_PER_PASS * (1 / BUSY_PAUSE + 1)  # passes with more to do are BUSY_PAUSE apart
    assert per_second and max(r["n"] for r in per_second) <= ceiling, [r["n"] for r in per_second]
    assert longest < PASS_TIME_BUDGET + 1.5, longest
    assert skipped > 0 and duplicates == 0  # behind schedules skip ticks (latest); none fires twice
    # the worker stays responsive: its loop is never held long, honest runs complete
    assert max(lags) < 1.0, max(lags)
    assert len(honest) >= 3 and max(honest) < 8.0, honest
    for filename, (_, line, reason) in REFUSED.items():
        info = workflows[filename]
        assert info.status == "invalid" and info.error_line == line and reason in (info.error or ""), info


@pytest.mark.parametrize(("inputs", "reason"), [
    ('{x: "${{ secrets.db }}"}', "unknown name 'secrets'"),
    ('{x: "${{ env.VAULT_TOKEN }}"}', "unknown name 'env'"),
    ('{x: "${{ inputs }}"}', "unknown name 'inputs'"),
    ('{x: "${{ run.id }}"}', "unknown name 'run'"),
    ('{x: "${{ steps.a.output }}"}', "unknown name 'steps'"),
    ('{x: "${{ tick.__class__.__mro__ }}"}', "expression `tick.__class__.__mro__`"),
    ('{x: "${{ __import__(\'os\').getenv(\'VAULT_TOKEN\') }}"}', "on.schedule.inputs.x: expression"),
    ('{x: "${{ len(sorted(\'ab\' * 4000000)) + tick_unix }}"}', "every tick would be refused"),
])
def test_schedule_inputs_read_only_the_tick(inputs: str, reason: str) -> None:
    text = f"name: sneaky\non: {{schedule: {{every: 1m, inputs: {inputs}}}}}\nsteps:\n  - {{id: a, uses: set}}\n"
    with pytest.raises(DefinitionError) as caught:
        load_text(text, "sneaky.yaml")
    assert reason in caught.value.reason and caught.value.line == 2, caught.value


async def test_rendered_tick_inputs_are_data_and_no_secret_reaches_them(settings: Settings, canary: Canary) -> None:
    # text that looks like an expression inside the rendered value is never evaluated again
    write_workflow(settings, "echo.yaml", """
        name: echo
        on:
          schedule:
            every: 1s
            inputs: {note: "${{ '$' + '{{ 7 * 6 }}' }} at ${{ tick_unix }}", literal: "{{ env.VAULT_TOKEN }}"}
        steps:
          - {id: a, uses: set, with: {note: "${{ inputs.note }}", literal: "${{ inputs.literal }}"}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        async def completed() -> str | None:
            row = await client.pool.fetchrow(
                "SELECT run_id::text FROM runs WHERE requested_by = 'schedule:echo' AND status = 'completed' LIMIT 1")
            return row["run_id"] if row else None

        await eventually(lambda: _truthy(completed()), 20, what="a scheduled run completed")
        detail = await client.get_run(str(await completed()))
    note = detail.output["note"]
    assert note.startswith("${{ 7 * 6 }} at ") and note.split(" at ")[1].isdigit()
    assert detail.output["literal"] == "{{ env.VAULT_TOKEN }}"
    await canary.assert_absent(settings)


async def _truthy(value: object) -> bool:
    return bool(await value)  # type: ignore[misc]
