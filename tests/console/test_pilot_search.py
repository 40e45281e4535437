"""The on-call search on the runs screen, driven with Pilot at 80x24: `/` takes `key:value` terms that combine
with AND (and with the regex it always took), `:view NAME` applies a saved view, `:view` lists them, `:save NAME`
saves the filter in force; a bad term or an unknown view says so on the screen."""

from __future__ import annotations

from textual.coordinate import Coordinate
from textual.widgets import Input, Static

from console.app import AgentConsole
from console.screens.runs import RunsScreen
from console.widgets.nav_table import NavTable
from tests.console.fakes import FIXED_NOW, RETRYING_RUN, FakeRuntimeClient, rid
from tests.console.helpers import make_app, screen_text, settle
from worker.models import RunStatus
from worker.search.filters import RunFilter
from worker.search.views import SavedView

SIZE = (80, 24)


def shown(app: AgentConsole) -> set[str]:
    table = app.screen.query_one("#runs-table", NavTable)
    return {str(table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value) for i in range(table.row_count)}


def runs_screen(app: AgentConsole) -> RunsScreen:
    screen = app.screen
    assert isinstance(screen, RunsScreen)
    return screen


def info(app: AgentConsole) -> str:
    return str(app.screen.query_one("#runs-info", Static).render())


def message(app: AgentConsole) -> str:
    widget = app.screen.query_one("#runs-message", Static)
    return str(widget.render()) if widget.display else ""


def box(app: AgentConsole) -> Input:
    return app.screen.query_one("#runs-filter", Input)


def with_view(name: str, filters: RunFilter) -> FakeRuntimeClient:
    client = FakeRuntimeClient()
    client.views[name] = SavedView(name, filters, "alice", FIXED_NOW)
    return client


async def test_a_combined_filter_narrows_on_the_server_and_the_info_line_says_so() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"workflow:nightly-report status:failed error:http")
        await settle(pilot)
        assert shown(app) == {rid(5)}
        assert client.filters[-1] == RunFilter(workflow="nightly-report", status="failed", error="http")
        assert "1 shown · filter: workflow=nightly-report status=failed error=http" in info(app)
        assert runs_screen(app).tab is RunStatus.FAILED  # the status tab shows it
        await pilot.press("enter")  # kept, back to the table
        await settle(pilot)
        assert not box(app).display and shown(app) == {rid(5)}
        await pilot.press("slash")
        assert box(app).value == "workflow:nightly-report status:failed error:http"  # to edit further
        box(app).value = "since:1m"
        await settle(pilot)
        assert shown(app) == {rid(3), rid(6)}  # started within the last minute (of the fixed clock)
        box(app).value = "waiting:retry 503"  # a term and the regex, together
        await settle(pilot)
        assert shown(app) == {rid(RETRYING_RUN)}
        assert "filter: waiting=retry · search (regex): 503" in info(app)
        # who may decide: the server knows the tasks (run 2's and 12's may be decided by anyone, 11's by a group)
        box(app).value = "waiting:alice"
        await settle(pilot)
        assert shown(app) == {rid(2), rid(12)}
        box(app).value = "waiting:group:payments-leads"
        await settle(pilot)
        assert shown(app) == {rid(2), rid(11), rid(12)}
        await pilot.press("escape")
        await settle(pilot)
        assert len(shown(app)) == 17 and "filter:" not in info(app) and runs_screen(app).tab is None


async def test_plain_text_still_searches_as_before() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"fan-out")
        await settle(pilot)
        assert len(shown(app)) == 3 and "search (regex): fan-out" in info(app) and "filter:" not in info(app)
        assert client.filters[-1] == RunFilter(search="fan-out")


async def test_a_bad_term_shows_why_and_keeps_the_last_good_filter() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"status:faild")
        await settle(pilot)
        assert "✗ status: 'faild' is not a status (one of queued, pending" in message(app)
        assert "✗ status: 'faild' is not a status" in screen_text(app)  # on the screen, under the info line
        assert "search (regex): status" in info(app)  # what is in force: the line as it last parsed
        await pilot.press("enter")  # stays open: the line says what to fix
        await settle(pilot)
        assert box(app).display and box(app).has_focus and app.is_running
        box(app).value = "wrkflow:hello"
        await settle(pilot)
        assert "✗ unknown filter wrkflow: (known: workflow: status: step: error: since: waiting:)" in message(app)
        box(app).value = "workflow:hello since:2x"
        await settle(pilot)
        assert "✗ since: '2x' is not a duration (use e.g. 500ms, 30s, 5m, 4h, 1d)" in message(app)
        box(app).value = "workflow:hello since:2h"
        await settle(pilot)
        assert message(app) == "" and shown(app) == {rid(4), rid(6), rid(18)}
        await pilot.press("enter")
        await settle(pilot)
        assert not box(app).display


async def test_a_status_tab_replaces_the_status_term() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"workflow:hello status:failed", "enter")
        await settle(pilot)
        assert runs_screen(app).tab is RunStatus.FAILED and shown(app) == {rid(10)}
        await pilot.press("s")  # the next tab after failed
        await settle(pilot)
        assert runs_screen(app).tab is RunStatus.COMPLETED and runs_screen(app).q.line == "workflow:hello"
        assert shown(app) == {rid(4)} and "filter: workflow=hello status=completed" in info(app)


async def test_view_name_applies_a_saved_view_and_escape_clears_it() -> None:
    client = with_view("failing-nightly", RunFilter(workflow="nightly-report", status="failed", error="HTTP 503"))
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")  # running: esc goes back to it
        await settle(pilot)
        await pilot.press("colon")
        assert box(app).display and box(app).value == ":"
        assert ":view NAME applies a saved view" in message(app)
        await pilot.press(*"view failing-nightly", "enter")
        await settle(pilot)
        screen = runs_screen(app)
        assert screen.status is RunStatus.FAILED  # the view's status is the tab
        assert screen.q.line == 'workflow:nightly-report error:"HTTP 503"'  # the rest is the filter line
        assert shown(app) == {rid(5)} and not box(app).display
        assert "1 shown · view failing-nightly · filter: workflow=nightly-report stat…" in info(app)  # 80 columns
        await pilot.press("slash", "end", *" x")  # narrowed further: no longer the view as saved
        await settle(pilot)
        assert "view failing-nightly (changed)" in info(app)
        await pilot.press("escape")
        await settle(pilot)
        assert "view" not in info(app) and screen.status is RunStatus.RUNNING and screen.q.line == ""
        assert len(shown(app)) == 3


async def test_view_alone_lists_the_saved_views_and_an_unknown_one_says_so() -> None:
    client = with_view("failing-nightly", RunFilter(workflow="nightly-report", status="failed"))
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"view", "enter")
        await settle(pilot)
        assert "saved views (:view NAME applies one, esc cancels): 1" in message(app)
        assert "  failing-nightly  workflow=nightly-report status=failed · saved by alice" in message(app)
        assert box(app).display and box(app).value == ":view "  # type the name
        await pilot.press(*"nope", "enter")
        await settle(pilot)
        assert "✗ no saved view 'nope' (saved: failing-nightly)" in message(app)
        assert len(shown(app)) == 17 and box(app).display
        box(app).value = ":vew x"
        await pilot.press("enter")
        await settle(pilot)
        assert "✗ unknown command :vew (:view NAME applies a saved view" in message(app)
        await pilot.press("escape")  # a command not run: back to the table, nothing cleared
        await settle(pilot)
        assert not box(app).display and message(app) == "" and len(shown(app)) == 17


async def test_save_name_saves_the_filter_in_force_as_a_view() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s", "s", "s")  # waiting
        await pilot.press("slash", *"workflow:refund-request step:approve", "enter")
        await settle(pilot)
        assert shown(app) == {rid(2), rid(11)}
        await pilot.press("colon", *"save BAD", "enter")
        await settle(pilot)
        assert "✗ a view name is lowercase letters, digits, '.', '_' or '-' (at most 63), not 'BAD'" in message(app)
        assert client.views == {}
        box(app).value = ":save waiting-approvals"
        await pilot.press("enter")
        await settle(pilot)
        saved = client.views["waiting-approvals"].filters
        assert saved == RunFilter(workflow="refund-request", status="waiting", step="approve")
        assert "saved view waiting-approvals: workflow=refund-request status=waiting step=approve" in message(app)
        assert "view waiting-approvals · filter:" in info(app) and not box(app).display
        assert shown(app) == {rid(2), rid(11)}  # the filter is still in force
        entry = app.command_log.entries[0]
        assert (entry.action, entry.target, entry.outcome) == ("save view", "view waiting-approvals", "ok")


async def test_a_readonly_console_does_not_save_views_but_applies_them() -> None:
    client = with_view("failing-nightly", RunFilter(workflow="nightly-report", status="failed"))
    app = make_app(client, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"save mine", "enter")
        await settle(pilot)
        assert "✗ read-only console: :save is disabled" in message(app) and "mine" not in client.views
        box(app).value = ":view failing-nightly"
        await pilot.press("enter")
        await settle(pilot)
        assert shown(app) == {rid(5)}


async def test_the_help_says_how_to_write_a_filter_and_use_views() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        notes = str(app.screen.query_one("#help-notes", Static).render())
        assert "workflow:W status:S step:X error:TEXT since:2h waiting:human|event|retry|alice" in notes
        assert ":view NAME applies a saved view" in notes and ":save NAME saves this filter" in notes
