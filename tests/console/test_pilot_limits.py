"""The Limits view (issue 17, `7`): limits and their use, the fleet's mode, budgets; live reload; `o`/`enter`, `b`
(Pilot, against FakeRuntimeClient)."""

from __future__ import annotations

from dataclasses import replace

from textual.widgets import Static

from console.app import AgentConsole
from console.screens.approvals import ApprovalsScreen
from console.screens.help import HelpScreen
from console.screens.limits import LimitsScreen
from console.screens.run_detail import RunDetailScreen
from console.widgets.nav_table import NavTable
from tests.console.fakes import FakeRuntimeClient, ago, rid
from tests.console.helpers import make_app, notifications, screen_text, settle
from worker.models import RunStatus

SIZE = (80, 24)


def table(app: AgentConsole, name: str = "#limits-table") -> NavTable:
    return app.screen.query_one(name, NavTable)


def detail(app: AgentConsole) -> str:
    return str(app.screen.query_one("#limit-detail", Static).render())


def with_parked_runs() -> FakeRuntimeClient:
    """Two runs parked on helpdesk-api (the one parked longest: rid 30), one waiting on something else."""
    client = FakeRuntimeClient()
    base = client.runs[0]
    for n, minutes, waiting in ((30, 9, "throttled: helpdesk-api (next slot in 41.0s)"),
                                (31, 2, "throttled: helpdesk-api (next slot in 12.5s)"),
                                (32, 5, "throttled: helpdesk-api-eu (next slot in 1.0s)")):
        client.runs.append(replace(base, run_id=rid(n), workflow="fan-out", status=RunStatus.WAITING,
                                   current_step="lookup", waiting_on=waiting, updated_at=ago(minutes=minutes)))
    return client


async def test_key_7_shows_the_limits_fullest_first_the_mode_and_the_budgets() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        assert isinstance(app.screen, LimitsScreen)
        text = screen_text(app)
        assert "7 Lim" in text.splitlines()[0] and "● live" in text.splitlines()[0]
        assert [str(k.value) for k in table(app).rows] == ["helpdesk-api", "openai-gpt4o", "anthropic", "partner-quota"]
        assert "mode mixed: 1 of 2 workers in fallback" in text and "web-2-5120-d4e5f6 since 3m ago" in text
        assert "1 full: helpdesk-api · 49 steps waiting" in text
        row = next(line for line in text.splitlines() if line.startswith(" helpdesk-api"))
        assert "FULL" in row and "19/20 req/s" in row and "37" in row
        assert "not in file" in next(line for line in text.splitlines() if "partner-quota" in line)
        assert "concurrency ████████ FULL  10/10 busy" in detail(app)
        assert [str(k.value) for k in table(app, "#budgets-table").rows][0] == "support-triage"  # nearest its cap
        assert "96%" in text and "$47.80 / $50.00" in text and "2 ask" in text
        await pilot.press("j")
        assert "openai-gpt4o" in detail(app) and "provider=openai model=gpt-4o*" in detail(app)


async def test_it_reloads_every_two_seconds_while_shown_and_not_when_hidden() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, LimitsScreen)
        client.limit_infos = [replace(i, waiting=99) if i.name == "anthropic" else i for i in client.limit_infos]
        await pilot.pause(2.3)
        await settle(pilot)
        assert "99" in next(line for line in screen_text(app).splitlines() if line.startswith(" anthropic"))
        await pilot.press("1")
        await settle(pilot)
        calls = client.calls
        await pilot.pause(2.3)
        await settle(pilot)
        assert client.calls == calls  # hidden: nothing fetched, only marked stale
        assert screen._stale


async def test_o_and_enter_open_the_run_parked_longest_on_the_limit() -> None:
    app = make_app(with_parked_runs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        assert "parked      2 runs:" in detail(app) and rid(30)[:8] in detail(app)
        await pilot.press("o")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(30)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(30)


async def test_o_on_a_limit_without_parked_runs_says_so() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7", "o")
        await settle(pilot)
        assert isinstance(app.screen, LimitsScreen)
        assert any("No run is parked on helpdesk-api (37 steps wait a moment on their workers)." in n
                   for n in notifications(app))


async def test_b_focuses_the_budgets_and_o_goes_to_the_approvals_of_one_asking() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7", "b")
        await settle(pilot)
        budgets = table(app, "#budgets-table")
        assert budgets.has_focus and budgets.selected_key() == "support-triage"
        await pilot.press("j", "o")  # nightly-report: nobody asks
        await settle(pilot)
        assert any("No run of nightly-report waits for a budget decision." in n for n in notifications(app))
        await pilot.press("k", "o")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)


async def test_no_limits_file_shows_the_example_and_redis_down_shows_unknown_counters() -> None:
    client = FakeRuntimeClient()
    client.no_limits_file()
    client.budget_infos = []
    app = make_app(client)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("7", "o")
        await settle(pilot)
        assert table(app).row_count == 0
        text = detail(app)
        assert "No limits.yaml in the workflows directory" in text
        assert "helpdesk-api: {requests: 20/s, concurrency: 10}" in text and "No workflow has a budget" in text
        assert any("No limit selected." in n for n in notifications(app))
    client = FakeRuntimeClient()
    client.redis_down = True
    app = make_app(client)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        text = screen_text(app)
        assert "Redis unreachable from the console: counters unknown" in text
        assert [str(k.value) for k in table(app).rows] == ["anthropic", "helpdesk-api", "openai-gpt4o"]


async def test_help_lists_the_limits_keys() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("7", "question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        keys = str(app.screen.query_one("#help-screen-keys", Static).render())
        assert "Open parked run / approvals" in keys and "Budgets" in keys
        assert "Limits" in str(app.screen.query_one("#help-global-keys", Static).render())
