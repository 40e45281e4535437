"""Behaviour of replay, the span waterfall, step logs, the health banner and server-side search (Pilot, 80x24)."""

from __future__ import annotations

import time

from textual.widgets import Button, Input, Label, Static

from console.app import AgentConsole
from console.messages import RefreshAll
from console.screens.replay import ReplayDialog
from console.screens.run_detail import RunDetailScreen
from console.screens.runs import RunsScreen
from console.widgets.nav_table import NavTable
from console.widgets.span_waterfall import SpanWaterfall
from tests.console.fakes import FakeRuntimeClient, rid
from tests.console.helpers import make_app, notifications, screen_text, settle

SIZE = (80, 24)


def dialog_text(app: AgentConsole) -> str:
    return str(app.screen.query_one("#plan", Static).render())


def error_text(app: AgentConsole) -> str:
    return str(app.screen.query_one("#error", Label).render())


# -- replay ------------------------------------------------------------------------------------
async def test_replay_from_the_runs_list_plans_first_then_starts_and_opens() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("j", "R")  # the fan-out run
        await settle(pilot)
        assert isinstance(app.screen, ReplayDialog)
        assert client.commands == [("replay", rid(3), None, None, True)]  # a dry run, nothing started
        text = dialog_text(app)
        assert "Runs again (4): list, fetch, summarize, notify" in text
        assert "\u00d73" in text and "note: new idempotency keys" in text  # x3: the foreach has three calls
        await pilot.press("y")
        await settle(pilot)
        assert client.commands[-1] == ("replay", rid(3), None, None, False)
        assert client.replays and client.replays[0] in dialog_text(app)
        await pilot.press("o")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == client.replays[0]


async def test_replay_from_a_selected_step_reuses_what_came_before() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(3))
        await settle(pilot)
        await pilot.press("j", "j", "j", "R")  # cursor on the fetch step
        await settle(pilot)
        assert isinstance(app.screen, ReplayDialog) and app.screen.from_step == "fetch"
        assert "Reused (1): list" in dialog_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        assert [c for c in client.commands if c[-1] is False] == []  # closed: nothing replayed


async def test_replay_inputs_editor_validates_json_and_replans() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("G", "R")  # an old hello run
        await settle(pilot)
        box = app.screen.query_one("#inputs", Input)
        assert box.value == '{"ticket_id": "T-1042"}'
        await pilot.press("i")
        assert box.has_focus
        box.value = '{"ticket_id": '
        await pilot.press("enter")
        await settle(pilot)
        assert "not valid JSON" in error_text(app)
        await pilot.press("y")  # typed into the editor, which has focus: no replay
        box.value = "[1, 2]"
        await pilot.press("enter")
        await settle(pilot)
        assert "must be a JSON object" in error_text(app)
        box.value = '{"ticket_id": 7}'  # valid JSON, refused by the workflow's input schema
        await pilot.press("enter")
        await settle(pilot)
        assert "must be a string" in error_text(app)
        await pilot.press("i")
        box.value = '{"ticket_id": "T-9"}'
        await pilot.press("enter")
        await settle(pilot)
        assert error_text(app) == ""
        await pilot.press("y")
        await settle(pilot)
        # run 10 started under the previous hello: the current version, which can take it over, is the default
        assert client.commands[-1] == ("replay", rid(10), None, {"ticket_id": "T-9"}, False, "latest")


async def test_replay_permission_denied_is_shown_clearly() -> None:
    client = FakeRuntimeClient()
    client.denied.add("replay")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        assert "Permission denied" in dialog_text(app)
        assert app.screen.query_one("#yes", Button).disabled
        await pilot.press("y")
        await settle(pilot)
        assert not client.replays
        assert any(n.startswith("Permission denied") for n in notifications(app))


async def test_cancel_permission_denied_is_reported() -> None:
    client = FakeRuntimeClient()
    client.denied.add("cancel")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c", "y")
        await settle(pilot)
        assert any("may not cancel" in n for n in notifications(app))


async def test_replay_is_refused_in_readonly() -> None:
    client = FakeRuntimeClient()
    app = make_app(client, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "Replay" not in screen_text(app).splitlines()[-1]
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert any("replay is disabled" in n for n in notifications(app))
        assert client.commands == []


# -- span waterfall ----------------------------------------------------------------------------
async def test_span_waterfall_keys_move_and_zoom() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(3))
        await settle(pilot)
        await pilot.press("w")
        chart = app.screen.query_one("#span-chart", SpanWaterfall)
        assert chart.has_focus and len(chart.rows) == 17 and not chart.zoomed
        assert [r.role for r in chart.rows[:3]] == ["queue", "step", "attempt"]
        crashed = [r for r in chart.rows if r.crashed]
        assert len(crashed) == 1 and crashed[0].failed
        await pilot.press("j", "j", "j", "j", "j")  # fetch[0] attempt 1
        assert chart.selected is not None and chart.selected.span.name == "fetch[0] attempt 1"
        await pilot.press("z")
        assert chart.zoomed and 0.9 < chart.window[0] < 1.0 and 3.0 < chart.window[1] < 3.1
        await pilot.press("minus")
        assert chart.window[1] - chart.window[0] > 4.0
        await pilot.press("plus", "plus")
        assert chart.window[1] - chart.window[0] < 2.1
        await pilot.press("0")
        assert not chart.zoomed
        await pilot.press("G")
        assert chart.cursor == 16 and chart.scroll_offset.y > 0
        assert "step list" not in screen_text(app)  # scrolled past the first rows
        detail = str(app.screen.query_one("#span-detail", Static).render())
        assert "approval wait" in detail


async def test_runs_without_spans_fall_back_to_attempts() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(5))
        await settle(pilot)
        await pilot.press("w")
        assert not app.screen.query_one("#span-chart").display
        assert "render #3" in screen_text(app)


async def test_two_thousand_spans_open_fast_and_render_only_what_is_visible() -> None:
    client = FakeRuntimeClient()
    client.span_counts[rid(4)] = 2000
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t0 = time.perf_counter()
        app.open_run(rid(4))
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
        chart = app.screen.query_one("#span-chart", SpanWaterfall)
        assert len(chart.rows) == 2000
        assert time.perf_counter() - t0 < 5  # generous: the benchmark measures it properly
        calls = 0
        original = chart._row_strip

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)

        chart._row_strip = counting  # type: ignore[method-assign]
        await pilot.press("pagedown", "pagedown")
        await pilot.pause()
        assert 0 < calls < 200  # a few screens' worth of rows, not 2,000


# -- logs ----------------------------------------------------------------------------------------
async def test_inspector_shows_the_step_logs() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.open_run(rid(3))
        await settle(pilot)
        await pilot.press("j", "j", "j")  # fetch: every item's lines
        await settle(pilot)
        text = screen_text(app)
        assert "logs (5)" in text and "HTTP 502 Bad Gateway, will retry" in text
        await pilot.press("j", "j", "j")  # fetch[1] attempt #1 only
        await settle(pilot)
        text = screen_text(app)
        assert "logs (1)" in text and "WARN [1]#1" in text


# -- connection banner -------------------------------------------------------------------------------
async def test_banner_names_redis_when_only_redis_is_down_and_clears() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        client.redis_down = True
        app.check_health()
        await settle(pilot)
        assert "Redis unreachable" in screen_text(app) and "◐ no feed" in screen_text(app)
        client.redis_down = False
        app.check_health()
        await settle(pilot)
        assert "unreachable" not in screen_text(app) and "● live" in screen_text(app)


async def test_banner_names_postgres_from_health_after_a_failed_reload() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        client.offline = True
        client.redis_down = True
        app.post_message(RefreshAll())
        await settle(pilot)
        assert app.health["postgres"] and "Postgres and Redis unreachable" in screen_text(app)
        client.offline = False
        client.redis_down = False
        app.check_health()  # the periodic re-check, without waiting for its timer
        await settle(pilot)
        assert app.offline_reason is None and "unreachable" not in screen_text(app)


# -- server-side search ----------------------------------------------------------------------------
async def test_filter_is_a_server_side_search_with_a_literal_fallback() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"503")
        await settle(pilot)
        assert client.searches[-1] == "503"  # the error text matches on the server
        table = app.screen.query_one("#runs-table", NavTable)
        assert table.row_count == 2  # the failed nightly-report run, and the one backing off
        box = app.screen.query_one("#runs-filter", Input)
        box.value = "[a-"
        await settle(pilot)
        assert "invalid regex" in screen_text(app)
        assert table.row_count == 0
        box.value = "refund-(request"
        await settle(pilot)
        assert table.row_count == 0
