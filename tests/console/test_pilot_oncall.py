"""The on-call keys (issue 18), driven with Pilot at 80x24: `p` pauses and resumes runs and workflows, the
retrying and paused tabs, `v`/`d` in the replay dialog, `R` on marked runs under a chosen version, `L` the
command log."""

from __future__ import annotations

from textual.widgets import Button, Static

from console.app import AgentConsole
from console.screens.command_log import CommandLogScreen
from console.screens.confirm import ConfirmDialog, ReasonPrompt
from console.screens.help import HelpScreen
from console.screens.replay import ReplayDialog
from console.screens.retry import BulkRetryDialog
from console.screens.run_detail import RunDetailScreen
from console.screens.runs import RunsScreen
from console.screens.workflow_diff import WorkflowDiffScreen
from console.screens.workflows import WorkflowsScreen
from console.widgets.nav_table import NavTable
from tests.console.fakes import (
    EVENT_RUN,
    FIXED_NOW,
    LEGACY_RUN,
    OLD_HELLO_RUN,
    PAUSED_RUN,
    PAUSING_RUN,
    RETRYING_RUN,
    FakeRuntimeClient,
    ago,
    rid,
)
from tests.console.helpers import make_app, notifications, screen_text, settle
from worker.models import RunStatus

SIZE = (80, 24)


def runs_table(app: AgentConsole) -> NavTable:
    return app.screen.query_one("#runs-table", NavTable)


def select(app: AgentConsole, n: int) -> None:
    table = runs_table(app)
    table.move_cursor(row=table.get_row_index(rid(n)))


def row(app: AgentConsole, n: int) -> str:
    return " ".join(str(cell) for cell in runs_table(app).get_row(rid(n)))


def run(client: FakeRuntimeClient, n: int):  # type: ignore[no-untyped-def]
    return next(r for r in client.runs if r.run_id == rid(n))


def replays(client: FakeRuntimeClient) -> list[tuple[object, ...]]:
    return [c for c in client.commands if c[0] == "replay"]


def log_rows(app: AgentConsole) -> list[tuple[str, str, str, str]]:
    return [(e.action, e.target, e.outcome, e.result) for e in app.command_log.entries]


# -- the runs list ---------------------------------------------------------------------------------------
async def test_paused_retrying_and_uncertain_runs_say_so_in_their_rows() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # 80 columns: the status says paused, the last field who (without where from), when, and why (cut)
        assert "⏸ paused" in row(app, PAUSED_RUN) and row(app, PAUSED_RUN).endswith("by oscar 3m ago:…")
        assert "⏸ pausing" in row(app, PAUSING_RUN) and "by oscar 8s ago" in row(app, PAUSING_RUN)
        assert "↻ retrying" in row(app, RETRYING_RUN) and "2/3 in 12s: HTTP" in row(app, RETRYING_RUN)
        assert "⚠ uncertain" in row(app, 12) and "⏸ human" in row(app, 2)  # an uncertain effect, an approval
        tabs = screen_text(app).splitlines()[1]
        assert "retry 1" in tabs and "paused 1" in tabs and tabs.startswith("all 17")
    async with make_app().run_test(size=(160, 48)) as pilot:
        app = pilot.app  # type: ignore[assignment]
        await settle(pilot)
        assert "refund · paused by oscar@10.0.0.8 3m ago: payments incident INC-441" in row(app, PAUSED_RUN)
        assert ("render · retrying 2/3 (next in 12s): HTTP 503 Service Unavailable"
                in row(app, RETRYING_RUN))
        tabs = screen_text(app).splitlines()[1]
        assert " retrying 1 " in tabs and " paused 1 " in tabs and " all 17 " in tabs


async def test_the_paused_tab_shows_only_while_a_run_is_paused() -> None:
    client = FakeRuntimeClient()
    client.runs = [r for r in client.runs if r.status is not RunStatus.PAUSED]
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "paused" not in screen_text(app).splitlines()[1]
        await pilot.press(*"ssss")  # all -> running -> retrying -> waiting -> paused (chosen: shown, with 0)
        await settle(pilot)
        assert app.screen.status is RunStatus.PAUSED  # type: ignore[attr-defined]
        assert "paused 0" in screen_text(app).splitlines()[1] and runs_table(app).row_count == 0


async def test_p_pauses_the_selected_run_with_a_required_reason() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, EVENT_RUN)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ReasonPrompt) and app.screen.title_text == "Pause 1 run: why?"
        await pilot.press("enter")
        assert "A reason is required." in str(app.screen.query_one("#error").render())
        await pilot.press(*"payments incident", "enter")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert client.commands == [("pause_run", rid(EVENT_RUN), "payments incident")]
        assert "⏸ paused" in row(app, EVENT_RUN) and "by tester just n" in row(app, EVENT_RUN)
        paused = run(client, EVENT_RUN).paused
        assert paused is not None and (paused.by, paused.reason, paused.scope) == ("tester", "payments incident", "run")
        assert any(n == "Paused: 1 run paused: payments incident" for n in notifications(app))


async def test_p_on_a_running_run_says_it_finishes_its_step_first() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, 3)
        await pilot.press("p", *"llm outage", "enter")
        await settle(pilot)
        assert "⏸ pausing" in row(app, 3)
        assert any("1 still finishing the step in flight" in n for n in notifications(app))


async def test_p_on_paused_runs_resumes_them_after_a_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, PAUSED_RUN)
        await pilot.press("space")
        select(app, PAUSING_RUN)
        await pilot.press("space", "p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog) and app.screen.title_text == "Resume 2 runs?"
        assert "payments incident" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert client.commands == []
        assert app.screen.marked == {rid(PAUSED_RUN), rid(PAUSING_RUN)}  # type: ignore[attr-defined]
        await pilot.press("p", "y")
        await settle(pilot)
        assert sorted(client.commands) == sorted([("resume_run", rid(PAUSED_RUN)), ("resume_run", rid(PAUSING_RUN))])
        assert "⏸" not in row(app, PAUSED_RUN) and "▶ running" in row(app, PAUSING_RUN)
        assert any(n == "Resumed: 2 runs resumed." for n in notifications(app))


async def test_marked_runs_mixed_pause_the_unpaused_and_skip_the_rest() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for n in (PAUSED_RUN, 6, 5):  # paused, pending, failed
            select(app, n)
            await pilot.press("space")
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ReasonPrompt) and app.screen.title_text == "Pause 1 run: why?"
        text = screen_text(app)
        assert "(1 already finished, skipped)" in text and "(1 already paused, skipped)" in text
        await pilot.press(*"db failover", "enter")
        await settle(pilot)
        assert client.commands == [("pause_run", rid(6), "db failover")]


async def test_a_run_held_by_its_paused_workflow_is_resumed_with_the_workflow() -> None:
    client = FakeRuntimeClient()
    client.pause_workflow_now("fan-out", by="oscar", at=ago(minutes=3), reason="helpdesk down")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "⏸ paused" in row(app, 12) and "(workflow) by os" in row(app, 12)
        select(app, 12)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen) and client.commands == []
        assert any("paused with their workflow (fan-out): resume the workflow on the Workflows screen" in n
                   for n in notifications(app))


async def test_a_conflict_on_one_run_is_reported_and_the_others_go_through() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for n in (6, 2):
            select(app, n)
            await pilot.press("space")
        await client.pause_run(rid(2), reason="someone else, meanwhile", by="alice")
        client.commands.clear()
        await pilot.press("p", *"mine", "enter")
        await settle(pilot)
        assert client.commands == [("pause_run", rid(6), "mine"), ("pause_run", rid(2), "mine")]
        shown = notifications(app)
        assert any(n.startswith("Paused 1 of 2:") and "is already paused (by alice)" in n for n in shown)
        assert log_rows(app)[0][2] == "error" and "already paused (by alice)" in log_rows(app)[0][3]


async def test_pause_is_refused_read_only() -> None:
    client = FakeRuntimeClient()
    app = make_app(client, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen) and client.commands == []
        assert any("pause/resume is disabled" in n for n in notifications(app))
        await pilot.press("3", "p")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowsScreen) and client.commands == []


async def test_the_run_detail_says_who_paused_the_run_and_why() -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.open_run(rid(PAUSED_RUN))
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        header = str(app.screen.query_one("#detail-header", Static).render())
        assert "⏸ paused" in header
        assert "paused by oscar@10.0.0.8 3m ago: payments incident INC-4411: hold refunds" in header


# -- workflows -------------------------------------------------------------------------------------------
def workflow_row(app: AgentConsole, name: str) -> str:
    return " ".join(str(cell) for cell in app.screen.query_one("#workflows-table", NavTable).get_row(
        f"workflows/{name}.yaml"))


async def test_p_pauses_a_workflow_with_a_reason_and_resumes_it_after_a_confirmation() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3", "j", "j")  # fan-out (invalid files first)
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ReasonPrompt) and app.screen.title_text == "Pause workflow fan-out: why?"
        await pilot.press("enter")
        assert isinstance(app.screen, ReasonPrompt)  # a reason is required
        await pilot.press(*"helpdesk down", "enter")
        await settle(pilot)
        assert client.commands == [("pause_workflow", "fan-out", "helpdesk down")]
        assert "⏸ paused" in workflow_row(app, "fan-out") and "by tester just now: helpd" in \
            workflow_row(app, "fan-out")
        detail = str(app.screen.query_one("#workflow-detail", Static).render())
        assert "paused by tester just now: helpdesk down" in detail and "2 unfinished runs held, 1 parked" in detail
        assert any(n.startswith("Paused workflow: fan-out: 2 runs held") for n in notifications(app))
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog) and app.screen.title_text == "Resume workflow fan-out?"
        await pilot.press("y")
        await settle(pilot)
        assert client.commands[-1] == ("resume_workflow", "fan-out")
        assert "⏸" not in workflow_row(app, "fan-out") and not client.workflow_pauses
        await pilot.press("1")
        await settle(pilot)
        assert "⏸" not in row(app, 12) and "(workflow)" not in screen_text(app)


async def test_a_workflow_paused_meanwhile_is_a_conflict() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3", "j", "j")
        await settle(pilot)
        client.pause_workflow_now("fan-out", by="alice", at=FIXED_NOW, reason="first")
        await pilot.press("p", *"second", "enter")
        await settle(pilot)
        assert any(n.startswith("Already changed: workflow fan-out is already paused (by alice)")
                   for n in notifications(app))
        assert "⏸ paused" in workflow_row(app, "fan-out")  # reloaded: the other pause shows


# -- retry under the current version ----------------------------------------------------------------------
async def test_the_replay_dialog_offers_the_current_version_by_default_and_v_switches() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, OLD_HELLO_RUN)
        await pilot.press("R")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ReplayDialog) and dialog.version == "current"
        versions = str(dialog.query_one("#versions", Static).render())
        assert "● current fcde2b2e (default)" in versions and "○ run's own 60303ae2" in versions
        assert "✓ the current version can take this run over" in versions
        assert replays(client)[-1] == ("replay", rid(OLD_HELLO_RUN), None, None, True, "latest")
        assert "runs under the current version fcde2b2edba5" in str(dialog.query_one("#plan", Static).render())
        assert '+    with: {message: "Hi, ${{ inputs.name }}!"}' in str(dialog.query_one("#diff", Static).render())
        await pilot.press("v")
        await settle(pilot)
        assert dialog.version == "run" and replays(client)[-1] == ("replay", rid(OLD_HELLO_RUN), None, None, True)
        await pilot.press("v", "y")
        await settle(pilot)
        assert replays(client)[-1] == ("replay", rid(OLD_HELLO_RUN), None, None, False, "latest")
        new = next(r for r in client.runs if r.run_id == client.replays[0])
        assert new.def_hash == "fcde2b2edba56bf408601fb721fe9b5c338d10ee"
        assert "under the current version fcde2b2e" in str(dialog.query_one("#plan", Static).render())


async def test_d_in_the_replay_dialog_shows_the_diff_of_the_two_versions() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, OLD_HELLO_RUN)
        await pilot.press("R")
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowDiffScreen)
        assert "60303ae2 (the run's) → fcde2b2e (current)" in screen_text(app)
        await pilot.press("left_square_bracket")  # a fixed pair: no stepping
        await settle(pilot)
        assert client.commands[-1] == ("diff", "hello", "60303ae22b998861bce3b28f33eec1be758a213c",
                                       "fcde2b2edba56bf408601fb721fe9b5c338d10ee")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ReplayDialog)


async def test_a_run_the_current_version_cannot_take_over_is_never_replayed_under_it() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, LEGACY_RUN)
        await pilot.press("R")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ReplayDialog) and dialog.version == "run"
        assert "'legacy_refund', where it stopped, is not in the current version" in \
            str(dialog.query_one("#versions", Static).render())
        await pilot.press("v")
        await settle(pilot)
        assert dialog.version == "current" and dialog.query_one("#yes", Button).disabled
        assert "Not under the current version" in str(dialog.query_one("#plan", Static).render())
        await pilot.press("y")
        await settle(pilot)
        assert not client.replays and all(c[4] for c in client.commands if c[0] == "replay")  # dry runs only
        await pilot.press("v", "y")  # its own version
        await settle(pilot)
        assert replays(client)[-1] == ("replay", rid(LEGACY_RUN), None, None, False) and len(client.replays) == 1


async def test_bulk_retry_under_the_current_version_skips_the_incompatible_run() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for n in (5, LEGACY_RUN, OLD_HELLO_RUN):
            select(app, n)
            await pilot.press("space")
        await pilot.press("R")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, BulkRetryDialog) and dialog.mode == "auto"
        text = screen_text(app)
        assert "Retry 3 runs?" in text and "1 under the current version, 2 under their own versions" in text
        await pilot.press("v")
        await settle(pilot)
        assert dialog.mode == "current"
        text = screen_text(app)
        assert "Retry 2 runs?" in text and "1 skipped" in text and "68bde759 refund-request" in text
        await pilot.press("v", "v")  # run's own, then back to each run's default
        await settle(pilot)
        assert dialog.mode == "auto" and "Retry 3 runs?" in screen_text(app)
        await pilot.press("v", "y")
        await settle(pilot)
        assert client.commands == [("retry", rid(5), "current"), ("retry", rid(OLD_HELLO_RUN), "current")]
        assert [r.def_hash[:8] for r in client.runs if r.run_id in client.replays] == ["b5bb9d80", "fcde2b2e"]
        shown = notifications(app)
        # run 5's file has not changed: it runs under its own version, which is the current one
        assert any("2 new runs: 1 under the current version, 1 under their own." in n and "skipped 68bde759" in n
                   for n in shown)


async def test_bulk_retry_with_nothing_retryable_opens_no_dialog() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("space", "space", "R")  # the pending run and a running one
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen) and client.commands == []
        assert any("Nothing to retry" in n for n in notifications(app))


# -- the command log --------------------------------------------------------------------------------------
async def test_key_l_shows_every_action_of_the_session_with_its_result() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("L")
        await settle(pilot)
        assert isinstance(app.screen, CommandLogScreen) and "Nothing done yet in this session" in screen_text(app)
        await pilot.press("L")  # L closes it again
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("p", *"incident", "enter")  # pause the pending run
        await settle(pilot)
        select(app, 5)
        await pilot.press("R")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("2", "a", "y")  # approve the first task
        await settle(pilot)
        await pilot.press("6", "p", "enter")  # resume the paused schedule
        await settle(pilot)
        await pilot.press("L")
        await settle(pilot)
        assert isinstance(app.screen, CommandLogScreen)
        decided = next(c for c in client.commands if c[0] == "decide")
        assert [(a, t, o) for a, t, o, _ in log_rows(app)] == [
            ("resume schedule", "schedule fan-out", "ok"),
            ("approve", f"task {decided[1][:8]}", "ok"),
            ("replay", f"run {rid(5)[:8]}", "ok"),
            ("pause", f"run {rid(6)[:8]}", "ok"),
        ]
        assert log_rows(app)[1][3].startswith("approved · refund-request · step approve")
        text = screen_text(app)
        assert "4 actions" in text and "✓ new run" in text
        detail = str(app.screen.query_one("#log-detail", Static).render())
        assert "resume schedule" in detail and "result   ✓ ok: active" in detail
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, CommandLogScreen)


async def test_the_log_records_refusals_and_skips_and_updates_while_open() -> None:
    client = FakeRuntimeClient()
    client.denied.add("cancel")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c", "y")  # refused by the policy
        await settle(pilot)
        await pilot.press("L")
        await settle(pilot)
        assert log_rows(app)[0][:3] == ("cancel", f"run {rid(6)[:8]}", "error")
        assert "may not cancel" in log_rows(app)[0][3] and "1 failed" in screen_text(app)
        await app.client.retry(rid(6))  # a pending run: skipped, not an error
        await settle(pilot)
        table = app.screen.query_one("#log-table", NavTable)
        assert table.row_count == 2 and log_rows(app)[0][2:] == ("skipped", "it is pending, not failed or cancelled")
        assert "↷ it is pending" in screen_text(app)


async def test_key_l_waits_while_a_dialog_is_open_and_is_listed_in_the_help() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("L")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n", "question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "Command log (this session)" in screen_text(app)
