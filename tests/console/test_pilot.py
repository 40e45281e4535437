"""Behaviour: every key binding and action, driven with a Pilot at 80x24 against FakeRuntimeClient."""

from __future__ import annotations

from dataclasses import replace

from textual.command import CommandPalette
from textual.coordinate import Coordinate
from textual.widgets import Input, Label, Static, TabbedContent, Tree

from console.app import AgentConsole
from console.filtering import StatusTab
from console.messages import RefreshAll
from console.screens.approvals import ApprovalsScreen
from console.screens.confirm import ConfirmDialog, ReasonPrompt, ResolveDialog
from console.screens.help import HelpScreen
from console.screens.retry import BulkRetryDialog
from console.screens.run_detail import RunDetailScreen
from console.screens.runs import RunsScreen
from console.widgets.nav_table import NavTable
from tests.console.fakes import FIXED_NOW, RETRYING_RUN, FakeRuntimeClient, rid, tid
from tests.console.helpers import make_app, notifications, screen_text, settle
from worker.models import LiveEvent, RunStatus

SIZE = (80, 24)


def runs_table(app: AgentConsole) -> NavTable:
    return app.screen.query_one("#runs-table", NavTable)


def row_keys(table: NavTable) -> list[str]:
    return [str(table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value) for i in range(table.row_count)]


def status_of(screen: RunsScreen) -> StatusTab:
    return screen.status


# -- runs screen -------------------------------------------------------------------------------
async def test_runs_newest_first_with_stable_ids() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = runs_table(app)
        assert table.id == "runs-table"
        keys = row_keys(table)
        assert len(keys) == 17  # every status; parked in a `wait` step, queued, paused, pausing, backing off
        created = {r.run_id: r.created_at for r in app.client.runs}  # type: ignore[attr-defined]
        assert keys == sorted(keys, key=lambda k: created[k], reverse=True)
        text = screen_text(app)
        assert "⏸ human" in text  # runs waiting on a human carry the marker
        assert "1 Runs" in text and "2 Approvals (3)" in text and "3 Workflows (2✗)" in text


async def test_navigation_keys_j_k_g_shift_g() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = runs_table(app)
        assert table.cursor_row == 0
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == 16
        await pilot.press("g")
        assert table.cursor_row == 0


async def test_status_cycle_filters_on_the_server() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await pilot.press("s")
        await settle(pilot)
        assert status_of(screen) is RunStatus.RUNNING
        assert len(row_keys(runs_table(app))) == 3  # one of them is being paused
        await pilot.press("s")
        await settle(pilot)
        assert status_of(screen) == "retrying"
        assert row_keys(runs_table(app)) == [rid(RETRYING_RUN)]
        await pilot.press("s")
        await settle(pilot)
        assert status_of(screen) is RunStatus.WAITING
        assert {r.status for r in screen.runs} == {RunStatus.WAITING} and rid(RETRYING_RUN) in row_keys(runs_table(app))
        await pilot.press("S", "S", "S")
        await settle(pilot)
        assert status_of(screen) is None
        assert runs_table(app).row_count == 17


async def test_filter_text_and_regex_then_escape_clears() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        box = app.screen.query_one("#runs-filter", Input)
        assert box.has_focus and box.display
        await pilot.press(*"fan-out")
        await settle(pilot)
        assert runs_table(app).row_count == 3
        await pilot.press("enter")  # keep the filter, back to the table
        assert runs_table(app).has_focus and not box.display
        assert runs_table(app).row_count == 3
        await pilot.press("slash", "ctrl+a")
        box.value = "^(hello|nightly)"  # a regex
        await settle(pilot)
        assert {r.workflow for r in app.screen.visible_runs} == {"hello", "nightly-report"}
        box.value = "fan-out("  # not a regex: matched literally, no crash
        await settle(pilot)
        assert runs_table(app).row_count == 0
        box.value = rid(5)[:8]  # run ids match too
        await settle(pilot)
        assert row_keys(runs_table(app)) == [rid(5)]
        await pilot.press("escape")
        await settle(pilot)
        assert runs_table(app).row_count == 17 and not box.display


async def test_typing_in_the_filter_does_not_trigger_app_keys() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", "q", "2", "question_mark", "colon")
        await settle(pilot)
        assert app.is_running
        assert app.current_mode == "runs" and not isinstance(app.screen, CommandPalette)
        assert app.screen.query_one("#runs-filter", Input).value == "q2?:"


async def test_mark_and_bulk_cancel_after_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        first, second, third = row_keys(runs_table(app))[:3]
        await pilot.press("space", "space")  # mark row 0, then row 1 (space moves down)
        await pilot.press("space", "k", "space")  # mark row 2, unmark row 2 again
        await settle(pilot)
        assert app.screen.marked == {first, second}  # type: ignore[attr-defined]
        await pilot.press("c")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert dialog.title_text == "Cancel 2 runs?"
        assert client.commands == []  # nothing is sent before the answer
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("cancel", first, None), ("cancel", second, None)]
        assert third not in {c[1] for c in client.commands}
        assert app.screen.marked == set()  # type: ignore[attr-defined]
        assert any("Cancel requested for 2 runs" in n for n in notifications(app))


async def test_sort_key_cycles_the_server_order() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert row_keys(runs_table(app))[0] == rid(6)  # newest first
        expected = [("oldest", rid(10), "sorted: oldest first"), ("longest", rid(15), "sorted: longest first"),
                    ("workflow", rid(3), "sorted: by workflow"), ("newest", rid(6), None)]
        for order, first, label in expected:
            await pilot.press("o")
            await settle(pilot)
            assert client.orders[-1] == order
            assert row_keys(runs_table(app))[0] == first
            shown = screen_text(app)
            assert (label in shown) if label else ("sorted:" not in shown)


async def test_marked_failed_and_cancelled_runs_are_retried_after_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("space")  # run 6 (pending): marked, but not retryable
        await pilot.press("G", "space")  # run 10 (failed)
        await pilot.press("k", "k", "space")  # run 8 (cancelled)
        await settle(pilot)
        assert app.screen.marked == {rid(6), rid(10), rid(8)}  # type: ignore[attr-defined]
        await pilot.press("R")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, BulkRetryDialog)
        assert "Retry 2 runs?" in screen_text(app)
        assert "it is pending, not failed or cancelled" in screen_text(app)
        assert client.commands == []
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("retry", rid(8), "auto"), ("retry", rid(10), "auto")]
        assert len(client.replays) == 2 and app.screen.marked == set()  # type: ignore[attr-defined]
        assert any("2 new runs: 1 under the current version, 1 under their own" in n for n in notifications(app))


async def test_cancel_declined_sends_nothing() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.title_text == "Cancel 1 run?"
        await pilot.press("enter")  # the focused default is "Keep"
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert client.commands == []


async def test_cancel_counts_only_unfinished_runs() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("G")  # the oldest run: failed long ago
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)  # no dialog for nothing to do
        assert any("already finished" in n for n in notifications(app))
        await pilot.press("space", "g", "space")  # the failed run and the pending one
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog) and app.screen.title_text == "Cancel 1 run?"
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("cancel", rid(6), None)]


async def test_enter_opens_run_detail_and_escape_goes_back() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("j", "enter")
        await settle(pilot)
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        assert detail.run_id == rid(3)
        assert "fan-out" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert runs_table(app).cursor_row == 1  # the cursor stayed where it was


# -- run detail --------------------------------------------------------------------------------
async def test_run_detail_tree_nests_foreach_items_and_attempts() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(3))
        await settle(pilot)
        tree = app.screen.query_one("#step-tree", Tree)
        fetch = next(n for n in tree.root.children if n.data == ("step", "fetch", None))
        assert [c.data for c in fetch.children] == [("step", "fetch", i) for i in range(3)]
        item2 = fetch.children[2]
        assert [c.data for c in item2.children] == [("attempt", "fetch", 2, n) for n in (1, 2, 3)]
        # walk down to fetch[1] attempt #1 and read the inspector
        await pilot.press("j", "j", "j", "j", "j", "j")
        await settle(pilot)
        assert tree.cursor_node is not None and tree.cursor_node.data == ("attempt", "fetch", 1, 1)
        inspector = str(app.screen.query_one("#inspector-body", Static).render())
        assert "HTTP 502 Bad Gateway" in inspector
        assert f"{rid(3)}:fetch:1:0" in inspector  # idempotency key
        assert "11:59:21→11:59:24" in inspector  # attempt times
        await pilot.press("g")
        assert tree.cursor_line == 0


async def test_run_detail_tabs_and_cancel() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(3)[:8])  # a prefix is enough
        await settle(pilot)
        tabs = app.screen.query_one("#detail-tabs", TabbedContent)
        await pilot.press("w")
        assert tabs.active == "waterfall"
        assert "fetch[1] attempt 1" in screen_text(app)  # from the span store
        assert "crash✗" in screen_text(app)
        await pilot.press("e")
        assert tabs.active == "events"
        events = app.screen.query_one("#events-table", NavTable)
        assert events.row_count == 16 and events.has_focus
        await pilot.press("s")
        assert tabs.active == "steps"
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("cancel", rid(3), None)]


async def test_unknown_run_is_reported() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run("deadbeef")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert any("no run" in n for n in notifications(app))


# -- approvals -----------------------------------------------------------------------------------
async def test_approve_with_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one("#approvals-table", NavTable)
        assert table.row_count == 3
        assert table.selected_key() == tid(2)  # the nearest deadline first
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert "Refund 1200.00 EUR" in str(app.screen.body)
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("decide", tid(2), True, None)]
        assert table.row_count == 2  # reloaded: the task is no longer pending
        assert "Approved" in app.screen.query_one("#approvals-flash", Static).render().plain  # type: ignore[union-attr]


async def test_approve_declined_sends_nothing() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "a")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        assert client.commands == []


async def test_reject_requires_a_reason_then_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "j", "r")
        await settle(pilot)
        prompt = app.screen
        assert isinstance(prompt, ReasonPrompt)
        await pilot.press("enter")  # blank: refused, the prompt stays
        await settle(pilot)
        assert app.screen is prompt
        assert "A reason is required." in str(prompt.query_one("#error", Label).render())
        await pilot.press(*"over limit")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert "reason: over limit" in str(app.screen.body)
        await pilot.press("y")
        await settle(pilot)
        assert client.commands == [("decide", tid(1), False, "over limit")]


async def test_reject_cancelled_at_the_reason_prompt() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "r")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        assert client.commands == []


async def test_conflict_is_shown_clearly() -> None:
    client = FakeRuntimeClient()
    client.raise_conflict_for(tid(2), by="alice@10.0.0.7")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "a")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        flash = app.screen.query_one("#approvals-flash", Static).render().plain  # type: ignore[union-attr]
        assert "Already decided" in flash and "already approved by alice@10.0.0.7" in flash
        assert any(n.startswith("Already decided: ") for n in notifications(app))
        assert "approved by alice@10.0.0.7" in screen_text(app)  # on screen, not only in a toast


async def test_uncertain_task_is_resolved_not_approved() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "G", "a")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)  # approve does not apply
        assert any("press e to resolve" in n for n in notifications(app))
        await pilot.press("e")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ResolveDialog)
        dialog.query_one("#reason", Input).value = "checked the payments dashboard"
        dialog.query_one("#output", Input).value = '{"refund_id": "rf_1"}'
        await pilot.press("d")
        await settle(pilot)
        assert client.commands == [("resolve", tid(3), "done", {"refund_id": "rf_1"},
                                    "checked the payments dashboard")]


async def test_resolve_retry_and_bad_output() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "G", "e")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ResolveDialog)
        dialog.query_one("#output", Input).value = "{not json"
        await pilot.press("d")
        await settle(pilot)
        assert app.screen is dialog and "not valid JSON" in str(dialog.query_one("#error", Label).render())
        await pilot.press("t")
        await settle(pilot)
        assert client.commands == [("resolve", tid(3), "retry", None, None)]


async def test_resolve_is_refused_on_an_approval() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "e")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        assert any("press a to approve" in n for n in notifications(app))


async def test_open_run_from_approvals() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "o")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(11)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)


# -- read-only -------------------------------------------------------------------------------------
async def test_readonly_hides_and_refuses_every_action() -> None:
    client = FakeRuntimeClient()
    app = make_app(client, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "READ-ONLY" in screen_text(app)
        footer = screen_text(app).splitlines()[-1]
        assert "Cancel" not in footer and "Mark" in footer
        await pilot.press("space", "c")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("2")
        await settle(pilot)
        footer = screen_text(app).splitlines()[-1]
        assert "Approve" not in footer and "Reject" not in footer and "Resolve" not in footer
        await pilot.press("a", "r", "G", "e")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        app.open_run(rid(3))
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        assert "Replay" not in screen_text(app).splitlines()[-1]
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        refused = [n for n in notifications(app) if n.startswith("Refused")]
        assert len(refused) == 6
        assert any("replay" in n for n in refused)
        assert any("cancel" in n for n in refused) and any("approve" in n for n in refused)
        assert any("reject" in n for n in refused) and any("resolve" in n for n in refused)
        assert client.commands == []


# -- app-wide keys -------------------------------------------------------------------------------------
async def test_number_keys_switch_screens_and_escape_returns() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, mode, table_id in [("2", "approvals", "#approvals-table"), ("3", "workflows", "#workflows-table"),
                                    ("4", "workers", "#workers-table"), ("5", "events", "#events-feed"),
                                    ("1", "runs", "#runs-table")]:
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == mode
            assert app.screen.query_one(table_id, NavTable).row_count > 0
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert app.current_mode == "runs"


async def test_nav_bar_is_clickable() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("NavBar", offset=(20, 0))
        await settle(pilot)
        assert app.current_mode == "approvals"


async def test_workflows_show_invalid_files_with_location() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        table = app.screen.query_one("#workflows-table", NavTable)
        assert row_keys(table)[:2] == ["workflows/nightly-report.yaml", "workflows/scratch.yaml"]
        detail = str(app.screen.query_one("#workflow-detail", Static).render())
        assert "workflows/nightly-report.yaml:12:5" in detail and "retyr" in detail
        await pilot.press("j")
        detail = str(app.screen.query_one("#workflow-detail", Static).render())
        assert "workflows/scratch.yaml:3:9" in detail


async def test_workers_show_liveness_and_held_runs() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        text = screen_text(app)
        assert "● alive" in text and "○ dead" in text
        detail = str(app.screen.query_one("#worker-detail", Static).render())
        assert rid(1)[:8] in detail and rid(3)[:8] in detail and "(2s ago)" in detail


async def test_help_lists_the_current_screen_keys() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.rows)
        assert keys["space"] == "Mark" and keys["c"] == "Cancel" and keys["/"] == "Filter"
        assert keys["q"] == "Quit" and keys["j"] == "Down"
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("2", "question_mark")
        await settle(pilot)
        keys = dict(app.screen.rows)
        assert keys["a"] == "Approve" and keys["r"] == "Reject" and "space" not in keys
        await pilot.press("question_mark")  # ? toggles it closed
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)


async def test_q_quits() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


async def test_dialogs_block_screen_switching() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c", "3")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog) and app.current_mode == "runs"


async def test_command_palette_jumps_to_a_screen_and_a_run() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await settle(pilot)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"go to workers")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_mode == "workers"
        await pilot.press("colon")  # the vi-style key opens the same palette
        await settle(pilot)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*rid(3)[:8])
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(3)


# -- live feed and connection state -------------------------------------------------------------------
async def test_live_event_reloads_the_runs_table() -> None:
    client = FakeRuntimeClient(events=[])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        new = replace(client.runs[0], run_id=rid(13), created_at=FIXED_NOW, status=RunStatus.PENDING)
        client.runs.append(new)
        client.push_event(LiveEvent("run", "run.created", rid(13), {"status": "pending"}, "2-0"))
        await settle(pilot)
        assert row_keys(runs_table(app))[0] == rid(13)
        assert app.events_seen == 1
        client.push_event(LiveEvent("span", "span.finished", rid(13), {"spans": []}, "2-1"))
        await settle(pilot)
        assert app.events_seen == 1  # telemetry is not listed on the events screen


async def test_a_burst_of_events_for_a_run_leaves_its_row_on_the_latest_step() -> None:
    client = FakeRuntimeClient(events=[])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = runs_table(app)
        run = next(r for r in client.runs if r.status is RunStatus.RUNNING)
        steps = ["lookup", "score", "notify-owner"]
        for i, step in enumerate(steps):
            client.push_event(LiveEvent("step", "step.started", run.run_id,
                                        {"status": "running", "current_step": step}, f"4-{i}"))
        client.runs[client.runs.index(run)] = replace(run, current_step=steps[-1])
        await settle(pilot)
        row = " ".join(str(cell) for cell in table.get_row(run.run_id))
        assert "notify-owner" in row and "lookup" not in row and "score" not in row


async def test_event_flood_is_collapsed() -> None:
    client = FakeRuntimeClient(events=[])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = client.calls
        for i in range(200):
            client.push_event(LiveEvent("step", "step.completed", rid(1), {"status": "running"}, f"3-{i}"))
        await settle(pilot)
        assert app.events_seen == 200
        # each reload is two calls (runs + counts) and counts three more: far fewer than 200 events
        assert client.calls - before < 60


async def test_events_screen_shows_the_feed_and_opens_runs() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        table = app.screen.query_one("#events-feed", NavTable)
        assert table.row_count == 4
        await pilot.press("G", "enter")  # the oldest: run.created of rid(6)
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(6)


async def test_unreachable_runtime_shows_banner_and_recovers() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        client.offline = True
        app.post_message(RefreshAll())
        await settle(pilot)
        assert app.offline_reason is not None and "ConnectionRefusedError" in app.offline_reason
        assert "Postgres unreachable — retrying" in screen_text(app)
        assert runs_table(app).row_count == 17  # the last data stays on screen
        client.offline = False
        app.post_message(RefreshAll())
        await settle(pilot)
        assert app.offline_reason is None
        assert "Postgres unreachable" not in screen_text(app)
        assert any("Connection restored" in n for n in notifications(app))
