"""Snapshots of every screen and dialog at 80x24 (SSH) and 160x48, on fixed data and a fixed clock.

Regenerate after an intended change: `pytest tests/console/test_snapshots.py --snapshot-update`,
then look at the SVGs in tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from textual.pilot import Pilot

from console.app import AgentConsole
from console.messages import RefreshAll
from console.widgets.nav_table import NavTable
from tests.console.fakes import (
    EVENT_RUN,
    LEGACY_RUN,
    OLD_HELLO_RUN,
    PAUSED_RUN,
    RUN_NUMBERS,
    FakeRuntimeClient,
    ago,
    rid,
)
from tests.console.helpers import make_app, no_blink, settle
from worker.errors import Conflict

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]

Before = Callable[[Pilot[None]], Awaitable[None]]


def keys(*presses: str) -> Before:
    """Settle, press the keys one by one (settling after each), then freeze cursors."""

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in presses:
            await pilot.press(key)
            await settle(pilot)
        no_blink(pilot.app)  # type: ignore[arg-type]
        await pilot.pause()

    return run_before


def check(snap_compare: Any, size: tuple[int, int], before: Before, app: AgentConsole | None = None) -> None:
    assert snap_compare(app or make_app(), terminal_size=size, run_before=before)


def open_fan_out(*more: str) -> Sequence[str]:
    # the fan-out run (rid 3) is the second newest: j moves onto it
    return ("j", "enter", *more)


@pytest.mark.parametrize("size", SIZES)
def test_runs(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys())


@pytest.mark.parametrize("size", SIZES)
def test_runs_filtered(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("slash", "r", "e", "f", "u", "n", "d"))


@pytest.mark.parametrize("size", SIZES)
def test_runs_status_waiting(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("s", "s"))


@pytest.mark.parametrize("size", SIZES)
def test_cancel_confirm_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("space", "j", "space", "c"))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_steps(snap_compare: Any, size: tuple[int, int]) -> None:
    # cursor onto fetch[1] attempt #1: the inspector shows the failed attempt
    check(snap_compare, size, keys(*open_fan_out("j", "j", "j", "j", "j", "j")))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_waterfall(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys(*open_fan_out("w")))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_events(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys(*open_fan_out("e")))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_failed_run(snap_compare: Any, size: tuple[int, int]) -> None:
    # the failed nightly-report run: three failed attempts and the run's error in the header
    check(snap_compare, size, keys("G", "k", "k", "k", "k", "enter", "j", "j", "j"))


def open_agent_run(*presses: str) -> Before:
    """Open run 20 (agent turns, a child run; not in the runs list), then press the keys."""
    then = keys(*presses)

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        assert isinstance(pilot.app, AgentConsole)
        pilot.app.open_run(rid(20))
        await then(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_agent_turn(snap_compare: Any, size: tuple[int, int]) -> None:
    # turns and tool calls nested under both agent steps, the child run under the workflow step;
    # cursor on the first LLM turn: its text, the tools it asked for, tokens, model
    check(snap_compare, size, open_agent_run("j", "j", "j"))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_rejected_tool_call(snap_compare: Any, size: tuple[int, int]) -> None:
    # cursor on the refund the human rejected: arguments, the approval (who, reason), the error fed back
    check(snap_compare, size, open_agent_run("j", "j", "j", "j"))


@pytest.mark.parametrize("size", SIZES)
def test_approvals(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("2"))


@pytest.mark.parametrize("size", SIZES)
def test_approve_confirm_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("2", "a"))


@pytest.mark.parametrize("size", SIZES)
def test_reject_reason_prompt_requires_reason(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("2", "r", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_resolve_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("2", "G", "e"))


@pytest.mark.parametrize("size", SIZES)
def test_approval_conflict(snap_compare: Any, size: tuple[int, int]) -> None:
    client = FakeRuntimeClient()
    client.raise_conflict_for(client.tasks[1].task_id)
    check(snap_compare, size, keys("2", "a", "y"), make_app(client))


@pytest.mark.parametrize("size", SIZES)
def test_workflows(snap_compare: Any, size: tuple[int, int]) -> None:
    # an invalid file first: file:line, the offending line with a caret, its versions; the reload history
    check(snap_compare, size, keys("3"))


@pytest.mark.parametrize("size", SIZES)
def test_workflows_active_versions(snap_compare: Any, size: tuple[int, int]) -> None:
    # hello: two versions, the active one marked; the history's focus on the refund-request reload
    check(snap_compare, size, keys("3", "j", "j", "j", "h", "j", "j"))


@pytest.mark.parametrize("size", SIZES)
def test_workflow_diff(snap_compare: Any, size: tuple[int, int]) -> None:
    # d: the version before the active one against the active one
    check(snap_compare, size, keys("3", "d"))


@pytest.mark.parametrize("size", SIZES)
def test_workflow_diff_older_pair(snap_compare: Any, size: tuple[int, int]) -> None:
    # [ steps to the older pair: an added step and a changed line
    check(snap_compare, size, keys("3", "d", "left_square_bracket"))


@pytest.mark.parametrize("size", SIZES)
def test_workflows_help(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("3", "question_mark"))


@pytest.mark.parametrize("size", SIZES)
def test_workers(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("4"))


@pytest.mark.parametrize("size", SIZES)
def test_events(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("5"))


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("question_mark"))


@pytest.mark.parametrize("size", SIZES)
def test_readonly(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("c"), make_app(readonly=True))


@pytest.mark.parametrize("size", SIZES)
def test_offline_banner(snap_compare: Any, size: tuple[int, int]) -> None:
    client = FakeRuntimeClient()

    async def before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        client.offline = True
        pilot.app.post_message(RefreshAll())
        await settle(pilot)

    check(snap_compare, size, before, make_app(client))


def test_fake_ids_are_distinct() -> None:
    """The snapshots rely on every run having a different short id."""
    assert len({rid(n)[:8] for n in RUN_NUMBERS}) == len(RUN_NUMBERS) == 17
    assert len({rid(n)[:8] for n in (*RUN_NUMBERS, 13, 20, 21)}) == 20  # with the live tests' new run, the unlisted
    assert {r.run_id for r in FakeRuntimeClient().runs} == {rid(n) for n in RUN_NUMBERS}


# -- replay, span waterfall ----------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_replay_dialog_plan(snap_compare: Any, size: tuple[int, int]) -> None:
    # R on the fan-out run: reused / run again / external calls (x3 for the foreach) / notes
    check(snap_compare, size, keys("j", "R"))


@pytest.mark.parametrize("size", SIZES)
def test_replay_dialog_from_step(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys(*open_fan_out("j", "j", "j", "R")))


@pytest.mark.parametrize("size", SIZES)
def test_replay_dialog_bad_inputs(snap_compare: Any, size: tuple[int, int]) -> None:
    # i edits the inputs; a stray character makes them invalid JSON; enter shows the error
    check(snap_compare, size, keys("G", "R", "i", "x", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_span_waterfall_zoomed_to_a_step(snap_compare: Any, size: tuple[int, int]) -> None:
    # cursor on "step fetch[1]" (failed attempt, retry queue delay, second attempt), z zooms to it
    check(snap_compare, size, keys(*open_fan_out("w", *"jjjjjjj", "z")))


@pytest.mark.parametrize("size", SIZES)
def test_redis_down_banner(snap_compare: Any, size: tuple[int, int]) -> None:
    client = FakeRuntimeClient()

    async def before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        client.redis_down = True
        pilot.app.check_health()  # type: ignore[attr-defined]
        await settle(pilot)

    check(snap_compare, size, before, make_app(client))


# -- what started a run, what it waits for, sending it an event, schedules ------------------------------
def on_event_run(*presses: str, detail: bool = False) -> Before:
    """Put the cursor on run 14 (parked in a `wait` step for customer.replied key T-42), or open it, then press
    the keys."""
    then = keys(*presses)

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        assert isinstance(pilot.app, AgentConsole)
        if detail:
            pilot.app.open_run(rid(EVENT_RUN))
        else:
            table = pilot.app.screen.query_one("#runs-table", NavTable)
            table.move_cursor(row=table.get_row_index(rid(EVENT_RUN)))
        await then(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_event_wait(snap_compare: Any, size: tuple[int, int]) -> None:
    # header: what it waits for, the time left and the trigger; inspector: the deadline and the trigger
    check(snap_compare, size, on_event_run(detail=True))


@pytest.mark.parametrize("size", SIZES)
def test_send_event_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    # E on the waiting run: name and key from its wait, the data field focused inside the braces
    check(snap_compare, size, on_event_run("E"))


@pytest.mark.parametrize("size", SIZES)
def test_send_event_dialog_bad_json(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, on_event_run("E", "x", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_send_event_confirm(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, on_event_run("E", *'"text": "thanks"', "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_schedules(snap_compare: Any, size: tuple[int, int]) -> None:
    # the paused fan-out schedule first: who paused it and why
    check(snap_compare, size, keys("6"))


@pytest.mark.parametrize("size", SIZES)
def test_schedules_active_selected(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("6", "j"))


@pytest.mark.parametrize("size", SIZES)
def test_schedule_pause_prompt(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("6", "j", "p"))


@pytest.mark.parametrize("size", SIZES)
def test_schedule_resume_prompt(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("6", "p"))


# -- on-call (issue 18): paused and retrying runs, pause/resume, retry under the current version, the log --------
def at_run(n: int, *presses: str) -> Before:
    """Put the cursor on run `n`, then press the keys."""
    then = keys(*presses)

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        table = pilot.app.screen.query_one("#runs-table", NavTable)
        table.move_cursor(row=table.get_row_index(rid(n)))
        await then(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_runs_status_retrying(snap_compare: Any, size: tuple[int, int]) -> None:
    # the retrying tab: the run backing off, its next attempt, when, and the last error
    check(snap_compare, size, keys("s", "s"))


@pytest.mark.parametrize("size", SIZES)
def test_runs_status_paused(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("s", "s", "s", "s"))


@pytest.mark.parametrize("size", SIZES)
def test_pause_reason_prompt(snap_compare: Any, size: tuple[int, int]) -> None:
    # p on the pending run (first row); enter without a reason: required
    check(snap_compare, size, keys("p", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_resume_confirm(snap_compare: Any, size: tuple[int, int]) -> None:
    # p on the paused run: who paused it and why, a confirmation
    check(snap_compare, size, at_run(PAUSED_RUN, "p"))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_paused(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, at_run(PAUSED_RUN, "enter"))


def with_fan_out_paused() -> AgentConsole:
    client = FakeRuntimeClient()
    client.pause_workflow_now("fan-out", by="oscar@10.0.0.8", at=ago(minutes=3), reason="helpdesk API rate-limited")
    return make_app(client)


@pytest.mark.parametrize("size", SIZES)
def test_workflows_paused(snap_compare: Any, size: tuple[int, int]) -> None:
    # fan-out paused: its row says by whom and why, its detail how many runs it holds
    check(snap_compare, size, keys("3", "j", "j"), with_fan_out_paused())


@pytest.mark.parametrize("size", SIZES)
def test_runs_of_a_paused_workflow(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys(), with_fan_out_paused())


@pytest.mark.parametrize("size", SIZES)
def test_workflow_pause_prompt(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("3", "j", "j", "j", "p"))


@pytest.mark.parametrize("size", SIZES)
def test_workflow_resume_confirm(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("3", "j", "j", "p"), with_fan_out_paused())


@pytest.mark.parametrize("size", SIZES)
def test_replay_dialog_current_version(snap_compare: Any, size: tuple[int, int]) -> None:
    # run 10 started under the previous hello: current (default) or its own, both hashes, the check, the diff
    check(snap_compare, size, at_run(OLD_HELLO_RUN, "R"))


@pytest.mark.parametrize("size", SIZES)
def test_replay_dialog_incompatible_current_version(snap_compare: Any, size: tuple[int, int]) -> None:
    # run 8 stopped at a step the current version removed: its own version is the default; v shows the refusal
    check(snap_compare, size, at_run(LEGACY_RUN, "R", "v"))


@pytest.mark.parametrize("size", SIZES)
def test_version_diff_from_the_replay_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, at_run(OLD_HELLO_RUN, "R", "d"))


def marked_for_retry(*presses: str) -> Before:
    """Mark runs 5 (failed, unchanged), 8 (cancelled, incompatible), 10 (failed, older version) and 7 (completed),
    then press the keys."""
    then = keys(*presses)

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        screen = pilot.app.screen
        screen.marked |= {rid(n) for n in (5, 7, LEGACY_RUN, OLD_HELLO_RUN)}  # type: ignore[attr-defined]
        screen.render_runs()  # type: ignore[attr-defined]
        await then(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_bulk_retry_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    # each run's default: the count per version, the completed run skipped
    check(snap_compare, size, marked_for_retry("R"))


@pytest.mark.parametrize("size", SIZES)
def test_bulk_retry_dialog_current_version(snap_compare: Any, size: tuple[int, int]) -> None:
    # v: all under the current version; the run whose step it removed is listed and skipped
    check(snap_compare, size, marked_for_retry("R", "v"))


@pytest.mark.parametrize("size", SIZES)
def test_command_log(snap_compare: Any, size: tuple[int, int]) -> None:
    # a pause, a refused resume (run 8 is cancelled), a bulk retry, then L
    client = FakeRuntimeClient()

    async def before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in ("p", *"disk full on db-2", "enter"):
            await pilot.press(key)
        await settle(pilot)
        with contextlib.suppress(Conflict):  # logged as refused, like a resume from the keyboard would be
            await pilot.app.client.resume_run(rid(LEGACY_RUN))  # type: ignore[attr-defined]
        await marked_for_retry("R", "y")(pilot)
        pilot.app.clear_notifications()
        await keys("L")(pilot)

    check(snap_compare, size, before, make_app(client))


@pytest.mark.parametrize("size", SIZES)
def test_command_log_empty(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("L"))


def live_step(key: tuple[object, ...], expect: str) -> Before:
    """Open run 22 and select a streaming step; wait until its live text (fed by FakeLive) is drawn."""

    async def run_before(pilot: Pilot[None]) -> None:
        from console.screens.run_detail import RunDetailScreen
        from console.widgets.live_text import LiveView

        app: AgentConsole = pilot.app  # type: ignore[assignment]
        await settle(pilot)
        app.open_run(rid(22))
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunDetailScreen)
        screen.query_one("#step-tree").move_cursor(screen._tree_nodes[key], animate=False)  # type: ignore[attr-defined]
        await settle(pilot)
        for _ in range(100):
            if expect in str(screen.query_one(LiveView).render()):
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_live_text_mid_stream(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, live_step(("step", "draft", None), "Leipzig"))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_live_text_after_an_abandoned_attempt(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, live_step(("step", "resolve", None), "lookup"))


# -- the on-call search: combined filters and saved views ----------------------------------------------------------
def _with_views() -> AgentConsole:
    from tests.console.fakes import FIXED_NOW
    from worker.search.filters import RunFilter
    from worker.search.views import SavedView

    client = FakeRuntimeClient()
    for name, filters in [("failing-nightly", RunFilter(workflow="nightly-report", status="failed", error="HTTP 503")),
                          ("stuck-approvals", RunFilter(status="waiting", waiting="human", since="1h"))]:
        client.views[name] = SavedView(name, filters, "alice@10.0.0.7", FIXED_NOW)
    return make_app(client)


@pytest.mark.parametrize("size", SIZES)
def test_runs_combined_filter(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("slash", *"workflow:refund-request waiting:human since:1h", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_runs_bad_filter_term(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("slash", *"workflow:hello since:2x"))


@pytest.mark.parametrize("size", SIZES)
def test_runs_view_applied(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("colon", *"view failing-nightly", "enter"), _with_views())


@pytest.mark.parametrize("size", SIZES)
def test_runs_saved_views_listed(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("colon", *"view", "enter"), _with_views())
