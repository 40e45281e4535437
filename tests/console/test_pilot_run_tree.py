"""The run tree's agent turns and child runs, driven with a Pilot at 80x24 against FakeRuntimeClient (run 20)."""

from __future__ import annotations

from dataclasses import replace

from textual.widgets import Static, Tree

from console.app import AgentConsole
from console.screens.run_detail import RunDetailScreen
from tests.console.fakes import FakeRuntimeClient, rid
from tests.console.helpers import make_app, settle
from worker.models import LiveEvent, StepStatus

SIZE = (80, 24)


def step_tree(app: AgentConsole) -> Tree[tuple[object, ...]]:
    return app.screen.query_one("#step-tree", Tree)


def inspector(app: AgentConsole) -> str:
    return str(app.screen.query_one("#inspector-body", Static).render())


def cursor_key(app: AgentConsole) -> object:
    node = step_tree(app).cursor_node
    return None if node is None else node.data


def cursor_label(app: AgentConsole) -> str:
    node = step_tree(app).cursor_node
    return "" if node is None else str(node.label)


async def test_run_tree_nests_agent_turns_and_the_inspector_shows_them() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(20))
        await settle(pilot)
        tree = step_tree(app)
        triage = next(n for n in tree.root.children if n.data == ("step", "triage", None))
        assert [c.data for c in triage.children] == [
            ("attempt", "triage", None, 1), ("turn", "triage", None, 0), ("turn", "triage", None, 3)]
        turn1 = triage.children[1]
        assert str(turn1.label) == "turn 1 · llm · 110 tok → refund, lookup"
        assert [str(c.label) for c in turn1.children] == ["tool refund ✗ rejected by alice", "tool lookup ✓"]
        assert str(triage.children[2].label) == "turn 2 · llm · 180 tok → answer"
        # the parked step: its turn so far from the journal, and the call it waits on
        resolve = next(n for n in tree.root.children if n.data == ("step", "resolve", None))
        assert [str(c.label) for c in resolve.children[1].children] == [
            "tool lookup ✓", "tool refund ◷ awaiting approval"]

        await pilot.press("j", "j", "j")  # the first LLM turn
        await settle(pilot)
        assert cursor_key(app) == ("turn", "triage", None, 0)
        shown = inspector(app)
        assert "Looking the ticket up, then refunding it." in shown
        assert "gpt-4o-mini" in shown and "tool_calls" in shown and "110 (in 100, out 10)" in shown
        assert "tool calls (2)" in shown and '"amount": 250.0' in shown

        await pilot.press("j")  # the refund alice rejected
        await settle(pilot)
        assert cursor_key(app) == ("turn", "triage", None, 1)
        shown = inspector(app)
        assert "rejected by alice" in shown and "over the 100 EUR limit" in shown
        assert "The call to refund was not made" in shown and "✗ error" in shown

        await pilot.press("G")  # the call the run is parked on
        await settle(pilot)
        assert cursor_key(app) == ("turn", "resolve", None, 2)
        assert "◷ awaiting approval" in inspector(app) and '"amount": 120.0' in inspector(app)


async def test_run_tree_enter_on_a_child_run_opens_its_detail() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(20))
        await settle(pilot)
        tree = step_tree(app)
        while cursor_key(app) != ("child", rid(21)):
            line = tree.cursor_line
            await pilot.press("j")
            assert tree.cursor_line > line, "no child run node in the tree"
        await settle(pilot)
        shown = inspector(app)
        assert rid(21) in shown and "refund-check" in shown and "enter opens its run detail" in shown
        assert cursor_label(app) == f"↳ run {rid(21)[:8]} refund-check ✓"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(21)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == rid(20)
        assert cursor_key(app) == ("child", rid(21))


async def test_run_tree_selected_turn_survives_a_live_reload() -> None:
    client = FakeRuntimeClient(events=[])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(rid(20))
        await settle(pilot)
        await pilot.press("G")
        await settle(pilot)
        assert cursor_key(app) == ("turn", "resolve", None, 2)
        # bob approves: the worker makes the call and commits it to the journal; the step runs on
        detail = client.details[rid(20)]
        resolve = detail.steps[2]
        made = {"index": 2, "type": "tool", "name": "refund", "arguments": {"ticket": "T-1042", "amount": 120.0},
                "text": "refunded 120 on T-1042", "isError": False,
                "approval": {"status": "approved", "by": "bob", "reason": "fine"}}
        progress = {**resolve.progress, "calls": [*resolve.progress["calls"], made]}
        running = replace(resolve, status=StepStatus.RUNNING, progress=progress)
        client.details[rid(20)] = replace(detail, steps=(*detail.steps[:2], running))
        triage = next(n for n in step_tree(app).root.children if n.data == ("step", "triage", None))
        triage.collapse()  # what the user closed stays closed
        before = client.calls
        client.push_event(LiveEvent("step", "step.started", rid(20), {"status": "running"}, "9-0"))
        await settle(pilot)
        assert client.calls > before  # reloaded
        assert cursor_key(app) == ("turn", "resolve", None, 2)
        assert cursor_label(app) == "tool refund ✓ approved by bob"
        shown = inspector(app)
        assert "approved by bob" in shown and "refunded 120 on T-1042" in shown
        triage = next(n for n in step_tree(app).root.children if n.data == ("step", "triage", None))
        assert not triage.is_expanded
