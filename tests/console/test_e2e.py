"""The console driven by keys against a real worker, Postgres and Redis (no fakes)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from console.app import AgentConsole
from console.widgets.nav_table import NavTable
from tests.console.helpers import settle
from tests.support.runtime import client_for, eventually, pending_task, running_worker, write_workflow
from worker.config import Settings

GATE = """
name: release
inputs: {version: {type: string}}
steps:
  - {id: ask, uses: approval, with: {prompt: "Release ${{ inputs.version }}?"}}
  - {id: ship, uses: set, with: {shipped: "${{ inputs.version }}"}}
"""


async def _until(pilot, check, timeout: float = 45.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the console did not show the expected state in time")
        await pilot.pause(0.1)


def _select(table: NavTable, key: str) -> None:
    table.move_cursor(row=table.get_row_index(key))


def _row_text(table: NavTable, key: str) -> str:
    return " ".join(str(cell) for cell in table.get_row(key))


async def test_approve_and_reject_from_the_keyboard_against_a_real_worker(settings: Settings) -> None:
    write_workflow(settings, "release.yaml", GATE)
    async with running_worker(settings), client_for(settings) as setup:
        ok_run = await setup.start_run("release", {"version": "1.0"})
        no_run = await setup.start_run("release", {"version": "2.0"})
        ok_task = await pending_task(setup, ok_run)
        no_task = await pending_task(setup, no_run)

        async with client_for(settings) as client:
            app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=1.0)
            async with app.run_test(size=(120, 36)) as pilot:
                await settle(pilot)
                await pilot.press("2")
                await settle(pilot)
                table = app.screen.query_one("#approvals-table", NavTable)
                await _until(pilot, lambda: table.row_count == 2)

                # approve: a, then confirm with y
                _select(table, ok_task.task_id)
                await pilot.press("a")
                await settle(pilot)
                await pilot.press("y")
                summary = await setup.wait_for_run(ok_run, timeout=20)
                assert summary.status.value == "completed"

                # reject: r, a reason, enter, then confirm
                await _until(pilot, lambda: table.row_count == 1)
                _select(table, no_task.task_id)
                await pilot.press("r")
                await settle(pilot)
                await pilot.press(*"not this week")
                await pilot.press("enter")
                await settle(pilot)
                await pilot.press("y")
                failed = await setup.wait_for_run(no_run, timeout=20)
                assert failed.status.value == "failed" and "not this week" in (failed.error or "")
                await _until(pilot, lambda: table.row_count == 0)

                # the runs list shows both outcomes (it updates from the live event stream)
                await pilot.press("1")
                await settle(pilot)
                runs = app.screen.query_one("#runs-table", NavTable)
                await _until(pilot, lambda: runs.row_count >= 2 and "completed" in _row_text(runs, ok_run)
                             and "failed" in _row_text(runs, no_run))
                await asyncio.sleep(0)

        tasks = await setup.list_tasks(status=None)
        decided = {t.task_id: t for t in tasks}
        assert decided[ok_task.task_id].status.value == "approved"
        assert decided[no_task.task_id].reason == "not this week"
        records = await setup.audit_records()
        assert [(r.action, r.outcome) for r in records] == [("approve", "approved"), ("reject", "rejected")]


ECHO = """
name: echo
inputs: {word: {type: string}}
steps:
  - {id: first, uses: set, with: {word: "${{ inputs.word }}"}}
  - {id: second, uses: set, with: {again: "${{ steps.first.output.word }}"}}
"""


async def test_replay_from_the_console_against_a_real_worker(settings: Settings) -> None:
    write_workflow(settings, "echo.yaml", ECHO)
    async with running_worker(settings), client_for(settings) as setup:
        source = await setup.start_run("echo", {"word": "hi"})
        assert (await setup.wait_for_run(source, timeout=20)).status.value == "completed"

        async with client_for(settings) as client:
            app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=1.0)
            async with app.run_test(size=(120, 36)) as pilot:
                await settle(pilot)
                runs = app.screen.query_one("#runs-table", NavTable)
                await _until(pilot, lambda: runs.row_count >= 1)
                _select(runs, source)
                await pilot.press("R")
                await _until(pilot, lambda: getattr(app.screen, "plan", None) is not None)
                plan = app.screen.plan  # type: ignore[attr-defined]
                assert sorted(plan.reused + plan.rerun) == ["first", "second"] and plan.external_calls == []
                await pilot.press("y")
                await _until(pilot, lambda: getattr(app.screen, "new_run_id", None) is not None)
                new_id = app.screen.new_run_id  # type: ignore[attr-defined]
                assert new_id != source
                await pilot.press("o")  # open the new run
                await _until(pilot, lambda: getattr(app.screen, "run_id", None) == new_id)
                summary = await setup.wait_for_run(new_id, timeout=20)
                assert summary.status.value == "completed"
                await _until(pilot, lambda: app.screen.detail is not None  # type: ignore[attr-defined]
                             and app.screen.detail.summary.status.value == "completed")  # type: ignore[attr-defined]
                await pilot.press("escape")
                await _until(pilot, lambda: runs.row_count >= 2 and "completed" in _row_text(runs, new_id))
        records = await setup.audit_records()
        assert [r.action for r in records] == ["replay"]


async def test_workflows_screen_follows_hot_reloads_live_and_diffs_them(settings: Settings) -> None:
    from textual.widgets import Static

    from console.screens.workflow_diff import WorkflowDiffScreen

    one = "name: greet\nsteps:\n  - {id: a, uses: set, with: {msg: one}}\n"
    path = write_workflow(settings, "greet.yaml", one)
    async with running_worker(settings), client_for(settings) as client:
        # no safety refresh: what changes on screen arrives through the live feed
        app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("3")
            await settle(pilot)
            history = app.screen.query_one("#workflow-history-table", NavTable)
            detail = app.screen.query_one("#workflow-detail", Static)
            await _until(pilot, lambda: history.row_count >= 1 and "greet" in str(detail.render()))
            before = history.row_count

            write_workflow(settings, "greet.yaml", one.replace("one", "two"))  # hot reload
            await _until(pilot, lambda: history.row_count == before + 1 and "2 versions" in str(detail.render()))
            assert "loaded" in " ".join(str(cell) for cell in history.get_row_at(0))
            await pilot.press("d")
            await _until(pilot, lambda: isinstance(app.screen, WorkflowDiffScreen)
                         and app.screen.diff is not None)
            lines = str(app.screen.query_one("#diff", Static).render()).splitlines()
            assert "-  - {id: a, uses: set, with: {msg: one}}" in lines
            assert "+  - {id: a, uses: set, with: {msg: two}}" in lines
            await pilot.press("escape")
            await settle(pilot)

            path.write_text("name: greet\nsteps:\n  - id: a\n    uses: teleport\n", encoding="utf-8")
            await _until(pilot, lambda: history.row_count == before + 2 and "teleport" in str(detail.render()))
            text = str(detail.render())
            assert f"{path}:4" in text and "│     uses: teleport" in text and "^ here" in text
            assert "invalid" in " ".join(str(cell) for cell in history.get_row_at(0))


REPLY = """
name: reply
inputs: {ticket: {type: string}}
steps:
  - {id: hold, uses: wait, with: {event: customer.replied, key: "${{ inputs.ticket }}", timeout: 60s}}
  - {id: after, uses: set, with: {text: "${{ steps.hold.output.event.data.text }}"}}
"""


async def test_send_an_event_to_a_waiting_run_from_the_console_against_a_real_worker(settings: Settings) -> None:
    from textual.widgets import Input

    from console.screens.confirm import ConfirmDialog
    from console.screens.send_event import SendEventDialog

    write_workflow(settings, "reply.yaml", REPLY)
    async with running_worker(settings), client_for(settings) as setup:
        run_id = await setup.start_run("reply", {"ticket": "T-7"})

        async def parked() -> bool:
            return len(await setup.open_waits(run_id=run_id)) == 1

        await eventually(parked, 20, what="the run waits for its event")
        async with client_for(settings) as client:
            app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=1.0)
            async with app.run_test(size=(160, 40)) as pilot:
                await settle(pilot)
                runs = app.screen.query_one("#runs-table", NavTable)
                await _until(pilot, lambda: runs.row_count >= 1 and "◷ event" in _row_text(runs, run_id))
                row = _row_text(runs, run_id)
                assert "manual" in row and "event customer.replied key T-7" in row and "s left" in row
                _select(runs, run_id)
                await pilot.press("E")
                await _until(pilot, lambda: isinstance(app.screen, SendEventDialog))
                assert app.screen.query_one("#event-name", Input).value == "customer.replied"
                assert app.screen.query_one("#event-key", Input).value == "T-7"
                app.screen.query_one("#event-data", Input).value = '{"text": "thanks"}'
                await pilot.press("enter")
                await _until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
                await pilot.press("y")
                summary = await setup.wait_for_run(run_id, timeout=20)
                assert summary.status.value == "completed"
                await _until(pilot, lambda: "completed" in _row_text(runs, run_id))
        detail = await setup.get_run(run_id)
        after = next(v for v in detail.steps if v.step_id == "after")
        assert after.output == {"text": "thanks"}
        records = await setup.audit_records()
        assert [(r.action, r.outcome) for r in records] == [("send-event", "sent")]
