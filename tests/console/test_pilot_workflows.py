"""The Workflows screen's keys, driven with a Pilot at 80x24: excerpt, versions, diff, reload history."""

from __future__ import annotations

from dataclasses import replace

from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import Label, Static

from console.app import AgentConsole
from console.screens.help import HelpScreen
from console.screens.workflow_diff import WorkflowDiffScreen
from console.screens.workflows import WorkflowsScreen
from console.widgets.nav_table import NavTable
from tests.console.fakes import FIXED_NOW, HASH, FakeRuntimeClient
from tests.console.helpers import make_app, notifications, settle
from worker.errors import NotFound, PermissionDenied
from worker.models import LiveEvent, WorkflowEvent, WorkflowVersion

SIZE = (80, 24)


def row_keys(table: NavTable) -> list[str]:
    return [str(table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value) for i in range(table.row_count)]


def detail(app: AgentConsole) -> str:
    return str(app.screen.query_one("#workflow-detail", Static).render())


def files(app: AgentConsole) -> NavTable:
    return app.screen.query_one("#workflows-table", NavTable)


def history(app: AgentConsole) -> NavTable:
    return app.screen.query_one("#workflow-history-table", NavTable)


async def open_workflows(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("3")
    await settle(pilot)


async def test_invalid_file_shows_the_offending_line_with_a_caret_and_the_versions() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        lines = detail(app).splitlines()
        excerpt = next(i for i, line in enumerate(lines) if "retyr" in line and "│" in line)
        assert lines[excerpt].split("│")[0].strip() == "12"
        # column 5: the caret sits under the fifth character of the excerpt
        text_start = lines[excerpt].index("│") + 2
        assert lines[excerpt + 1].index("^") - text_start == 4
        assert lines[excerpt][text_start + 4:].startswith("retyr")
        assert "stays active for new runs" in detail(app)
        versions = [line.removeprefix("* ").split() for line in lines
                    if line.startswith(("* ", "  ")) and " run" in line]
        assert [v[0] for v in versions] == ["b5bb9d80", "7d865e95", "ec5e2fb3", "1fbd3d2b"]
        assert versions[0][-3:] == ["3", "runs", "active"] and versions[1][-2:] == ["17", "runs"]
        assert sum(1 for line in lines if line.startswith("* ")) == 1
        await pilot.press("j")  # scratch.yaml: never loaded, no versions section
        await settle(pilot)
        assert "steps: a: b" in detail(app) and "VERSIONS" not in detail(app)


async def test_selecting_another_workflow_loads_its_versions() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        await pilot.press("j", "j", "j")  # hello
        await settle(pilot)
        text = detail(app)
        assert "hello" in text and "* fcde2b2e" in text and "60303ae2" in text and "active" in text


async def test_d_opens_the_diff_of_the_previous_and_active_version_and_brackets_step() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowDiffScreen)
        old, new = client.versions["nightly-report"][1].def_hash, HASH["nightly-report"]
        assert client.commands[-1] == ("diff", "nightly-report", old, new)
        body = str(app.screen.query_one("#diff", Static).render())
        assert "-    with: {method: POST, url: \"https://reports.example/render\", timeout: 30s}" in body
        assert "+    with: {method: POST, url: \"https://reports.example/render\", timeout: 60s}" in body
        title = str(app.screen.query_one("#title", Label).render())
        assert "7d865e95 → b5bb9d80 (active)" in title and "[3→4 of 4]" in title
        await pilot.press("left_square_bracket")
        await settle(pilot)
        title = str(app.screen.query_one("#title", Label).render())
        assert "ec5e2fb3 → 7d865e95" in title
        body = str(app.screen.query_one("#diff", Static).render())
        assert "+  - id: notify" in body and "-    retry: {max_attempts: 2}" in body
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert "No newer pair of versions." in " ".join(notifications(app))
        await pilot.press("j", "k", "G", "g")  # scrolling keys do not close or break anything
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowsScreen)


async def test_d_explains_when_there_is_nothing_to_compare() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        await pilot.press("j", "d")  # scratch.yaml never loaded
        await settle(pilot)
        assert isinstance(app.screen, WorkflowsScreen)
        assert any("never loaded" in n for n in notifications(app))
        await pilot.press("j")  # fan-out: one version
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowsScreen)
        assert any("fan-out has only one version" in n for n in notifications(app))


async def test_diff_errors_are_shown_in_the_dialog() -> None:
    client = FakeRuntimeClient()

    async def denied(name: str, old_hash: str | None = None, new_hash: str | None = None, *,
                     context: int = 3) -> str:
        raise PermissionDenied(f"tester may not view workflow {name!r} (policy file)")

    client.workflow_diff = denied  # type: ignore[method-assign]
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert "may not view workflow 'nightly-report'" in str(app.screen.query_one("#diff", Static).render())


async def test_reload_history_is_newest_first_and_updates_live() -> None:
    client = FakeRuntimeClient()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        keys = row_keys(history(app))
        assert keys == [str(e.id) for e in client.workflow_history]
        assert keys == sorted(keys, key=int, reverse=True)
        # a worker hot-reloads hello.yaml: a new version, and a new history row
        new_hash = "0123456789abcdef0123456789abcdef01234567"
        client.workflow_history.insert(0, WorkflowEvent(100, FIXED_NOW, "loaded", "workflows/hello.yaml", "hello",
                                                        new_hash, None))
        client.versions["hello"] = [WorkflowVersion(new_hash, "hello", FIXED_NOW, "workflows/hello.yaml", True, 0),
                                    *(replace(v, active=False) for v in client.versions["hello"])]
        client.workflows = [replace(w, def_hash=new_hash, versions=3) if w.name == "hello" else w
                            for w in client.workflows]
        await pilot.press("j", "j", "j")  # hello
        await settle(pilot)
        client.push_event(LiveEvent("workflow", "workflow.loaded", None,
                                    {"path": "workflows/hello.yaml", "name": "hello", "def_hash": new_hash}))
        await settle(pilot)
        assert row_keys(history(app))[0] == "100"
        first = history(app).get_row_at(0)
        assert "✓ loaded" in str(first[1]) and "hello.yaml → 01234567" in str(first[3])
        text = detail(app)
        assert "* 01234567" in text and "(3 versions)" in text
        assert files(app).selected_key() == "workflows/hello.yaml"


async def test_h_focuses_the_history_and_enter_selects_the_file() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        await pilot.press("h")
        assert history(app).has_focus
        await pilot.press("j", "j")  # the refund-request reload
        await pilot.press("enter")
        await settle(pilot)
        assert files(app).has_focus and files(app).selected_key() == "workflows/refund-request.yaml"
        assert "refund-request" in detail(app).splitlines()[0]
        await pilot.press("h", "h")
        assert files(app).has_focus


async def test_help_lists_the_workflows_keys_and_they_work_read_only() -> None:
    app = make_app(readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.rows)
        assert keys["d"] == "Diff versions" and keys["h"] == "History"
        await pilot.press("escape", "d")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowDiffScreen)  # read-only actions stay allowed


async def test_unreadable_versions_are_said_in_the_pane_and_d_uses_the_runtime_default_pair() -> None:
    client = FakeRuntimeClient()

    async def missing(name: str, *, limit: int = 50) -> list[WorkflowVersion]:
        raise NotFound(f"no workflow named {name!r} (see `agentrt workflows`)")

    client.workflow_versions = missing  # type: ignore[method-assign]
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflows(pilot)
        assert "no workflow named 'nightly-report'" in detail(app)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowDiffScreen)
        assert client.commands[-1] == ("diff", "nightly-report", None, None)
        body = str(app.screen.query_one("#diff", Static).render())
        assert "+    with: {method: POST, url: \"https://reports.example/render\", timeout: 60s}" in body
        assert "previous → active" in str(app.screen.query_one("#title", Label).render())
