"""Behaviour of what issue 16 added to the console (Pilot, 80x24 against FakeRuntimeClient): the trigger column
and waits on the runs screen, `E` (send the event a waiting run waits for), and the Schedules view (`6`, `p`)."""

from __future__ import annotations

import time

from textual.widgets import Input, Label, Static

from console.app import AgentConsole
from console.messages import RunChanged
from console.screens.confirm import ConfirmDialog, ReasonPrompt
from console.screens.run_detail import RunDetailScreen
from console.screens.runs import RunsScreen
from console.screens.schedules import SchedulesScreen
from console.screens.send_event import SendEventDialog
from console.widgets.nav_table import NavTable
from tests.console.fakes import EVENT_RUN, FakeRuntimeClient, rid
from tests.console.helpers import make_app, notifications, screen_text, settle
from worker.models import RunStatus

SIZE = (80, 24)


def select_run(app: AgentConsole, run_id: str) -> None:
    table = app.screen.query_one("#runs-table", NavTable)
    table.move_cursor(row=table.get_row_index(run_id))


def error_text(app: AgentConsole) -> str:
    return str(app.screen.query_one("#error", Label).render())


def schedules_table(app: AgentConsole) -> NavTable:
    return app.screen.query_one("#schedules-table", NavTable)


# -- runs screen: trigger and wait ---------------------------------------------------------------
async def test_runs_show_the_trigger_and_what_a_waiting_run_waits_for() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lines = screen_text(app).splitlines()
        row = next(line for line in lines if rid(EVENT_RUN)[:8] in line)
        assert "◷ event" in row and "hook" in row and "customer.replied" in row
        assert "sched" in next(line for line in lines if rid(5)[:8] in line)
        assert "manual" in next(line for line in lines if rid(8)[:8] in line)
    async with make_app().run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        row = next(line for line in screen_text(pilot.app).splitlines()  # type: ignore[arg-type]
                   if rid(EVENT_RUN)[:8] in line)
        assert "webhook" in row and "await_reply · event customer.replied key T-42 · 2d3h left" in row


async def test_run_detail_header_and_inspector_show_trigger_wait_and_deadline() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.open_run(rid(EVENT_RUN))
        await settle(pilot)
        header = str(app.screen.query_one("#detail-header", Static).render())
        assert "◷ event" in header
        assert "waits for event customer.replied key T-42 · 2d3h left · trigger webhook" in header
        inspector = str(app.screen.query_one("#inspector-body", Static).render())
        assert "deadline  2025-03-16 15:00:00Z (2d3h left)" in inspector and "trigger   webhook" in inspector


async def test_a_live_change_off_waiting_drops_the_deadline() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        message = RunChanged(rid(EVENT_RUN), "step.started", "running", "await_reply", None)
        screen._patches[rid(EVENT_RUN)] = (message, time.monotonic())
        screen._apply_patches()  # what a live event does to its run's row, before the reload confirms it
        run = next(r for r in screen.runs if r.run_id == rid(EVENT_RUN))
        assert run.status is RunStatus.RUNNING and run.wake_at is None and run.trigger == "webhook"
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if rid(EVENT_RUN)[:8] in line)
        assert "▶ running" in row and "left" not in row


# -- send an event -----------------------------------------------------------------------------------
async def test_send_event_from_the_runs_list_prefills_validates_confirms_and_sends() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select_run(app, rid(EVENT_RUN))
        await pilot.press("E")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, SendEventDialog)
        assert dialog.query_one("#event-name", Input).value == "customer.replied"
        assert dialog.query_one("#event-key", Input).value == "T-42"
        data = dialog.query_one("#event-data", Input)
        assert data.has_focus and data.value == "{}"
        await pilot.press(*'"text": "thanks"')  # typed inside the braces
        assert data.value == '{"text": "thanks"}'
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert 'customer.replied  key T-42\ndata {"text":"thanks"}' in str(app.screen.body)
        assert client.commands == []  # nothing sent before the confirmation
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert client.commands == [("send_event", "customer.replied", "T-42", {"text": "thanks"})]
        assert any("Resumed 1 waiting run, started 0 runs." in n for n in notifications(app))
        assert next(r for r in app.screen.runs if r.run_id == rid(EVENT_RUN)).status is RunStatus.RUNNING


async def test_send_event_refuses_invalid_json_in_the_dialog() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select_run(app, rid(EVENT_RUN))
        await pilot.press("E")
        await settle(pilot)
        data = app.screen.query_one("#event-data", Input)
        data.value = '{"text": '
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SendEventDialog)
        assert "Data is not valid JSON" in error_text(app)
        data.value = '["thanks"]'
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SendEventDialog) and "must be a JSON object" in error_text(app)
        app.screen.query_one("#event-name", Input).value = " "
        data.value = "{}"
        await pilot.press("enter")
        await settle(pilot)
        assert "An event name is required." in error_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen) and client.commands == []


async def test_send_event_on_a_run_that_waits_for_no_event_says_so() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select_run(app, rid(3))  # running
        await pilot.press("E")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert any("is not waiting for an event (it is running)" in n for n in notifications(app))
        select_run(app, rid(2))  # waiting for a human
        await pilot.press("E")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert any("is not waiting for an event (it waits for human)" in n for n in notifications(app))
        assert client.commands == []


async def test_send_event_from_run_detail_declined_at_the_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(EVENT_RUN))
        await settle(pilot)
        await pilot.press("E")
        await settle(pilot)
        assert isinstance(app.screen, SendEventDialog)
        app.screen.query_one("#event-key", Input).value = "T-43"  # another key: it will not reach this run
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and client.commands == []
        await pilot.press("E")
        await settle(pilot)
        app.screen.query_one("#event-key", Input).value = "T-43"
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("send_event", "customer.replied", "T-43", {})]
        assert any("was not resumed: it waits for another name or key" in n for n in notifications(app))


async def test_send_event_permission_denied_and_readonly() -> None:
    client = FakeRuntimeClient()
    client.denied.add("send_event")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select_run(app, rid(EVENT_RUN))
        await pilot.press("E")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert any(n.startswith("Event not sent: tester may not send events") for n in notifications(app))
    client = FakeRuntimeClient()
    app = make_app(client, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select_run(app, rid(EVENT_RUN))
        await pilot.press("E")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert any("send event is disabled" in n for n in notifications(app))
        assert client.commands == []


# -- schedules --------------------------------------------------------------------------------------
async def test_key_6_opens_the_schedules_view() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        assert isinstance(app.screen, SchedulesScreen)
        assert schedules_table(app).row_count == 2
        text = screen_text(app)
        assert "6 Sched" in text.splitlines()[0] and "● live" in text.splitlines()[0]
        assert "⏸ paused" in text and "in 21h00m" in text and "cron 0 10 * * * (Europe/Berlin)" in text
        detail = str(app.screen.query_one("#schedule-detail", Static).render())
        assert "alice@10.0.0.7" in detail and "helpdesk API maintenance until Monday" in detail
        await pilot.press("j")
        detail = str(app.screen.query_one("#schedule-detail", Static).render())
        assert "next fire  2025-03-15 09:00:00Z (in 21h00m)" in detail and "4869c74d ✗ failed" in detail
        await pilot.press("o")  # the run of the last tick
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(5)
        await pilot.press("escape", "1")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)


async def test_pause_a_schedule_needs_a_reason() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6", "j", "p")  # nightly-report
        await settle(pilot)
        assert isinstance(app.screen, ReasonPrompt)
        await pilot.press("enter")
        assert "A reason is required." in error_text(app)
        await pilot.press(*"warehouse migration", "enter")
        await settle(pilot)
        assert isinstance(app.screen, SchedulesScreen)
        assert client.commands == [("pause_schedule", "nightly-report", "warehouse migration")]
        assert any(n.startswith("Paused: The schedule of nightly-report: warehouse migration")
                   for n in notifications(app))
        paused = next(s for s in app.screen.schedules if s.workflow == "nightly-report")
        assert paused.paused and paused.paused_reason == "warehouse migration"
        assert screen_text(app).count("⏸ paused") == 2


async def test_resume_a_schedule_reason_optional_and_escape_does_nothing() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6", "p")  # fan-out: paused
        await settle(pilot)
        assert isinstance(app.screen, ReasonPrompt) and "Resume" in app.screen.title_text
        await pilot.press("escape")
        await settle(pilot)
        assert client.commands == []
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert client.commands == [("resume_schedule", "fan-out", None)]
        assert not next(s for s in app.screen.schedules if s.workflow == "fan-out").paused  # type: ignore[attr-defined]
        assert "⏸ paused" not in screen_text(app)


async def test_pause_conflict_and_readonly() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6", "j")
        await settle(pilot)
        await client.pause_schedule("nightly-report", "someone else, meanwhile")
        client.commands.clear()
        await pilot.press("p", *"mine", "enter")
        await settle(pilot)
        assert client.commands == [("pause_schedule", "nightly-report", "mine")]
        assert any(n.startswith("Already changed: the schedule of nightly-report is already paused")
                   for n in notifications(app))
    client = FakeRuntimeClient()
    app = make_app(client, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6", "p")
        await settle(pilot)
        assert isinstance(app.screen, SchedulesScreen)
        assert any("pause/resume is disabled" in n for n in notifications(app)) and client.commands == []


async def test_schedules_view_without_schedules_says_how_to_add_one() -> None:
    client = FakeRuntimeClient()
    client.schedules = []
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        assert schedules_table(app).row_count == 0
        assert "No schedules." in str(app.screen.query_one("#schedule-detail", Static).render())
        await pilot.press("p", "o")
        await settle(pilot)
        assert isinstance(app.screen, SchedulesScreen) and client.commands == []
        assert any("No schedule selected." in n for n in notifications(app))
