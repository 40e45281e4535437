"""The run tree's pure part: agent turns from a transcript or a journal, child runs from events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from console.run_tree import AgentCall, ChildRun, agent_calls, call_label, child_label, child_runs, tool_state
from console.widgets.inspector import inspect_call, inspect_child
from tests.console.fakes import FIXED_NOW, FakeRuntimeClient, agent_detail, rid, unlisted_runs
from worker.models import EventView, RunDetail, RunId, StepStatus, StepView

USAGE = {"input_tokens": 20, "output_tokens": 8, "total_tokens": 28}
ECHO = {"id": "call_0", "name": "echo", "arguments": {"text": "hi"}}
ADD = {"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}


def _agent(status: StepStatus, output: Any = None, progress: Any = None, item: int | None = None) -> StepView:
    return StepView("agent", "agent", item, status, (), {}, output, None, None, progress=progress)


def test_transcript_and_journal_number_calls_alike() -> None:
    transcript = [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [ECHO, ADD], "usage": USAGE, "model": "m",
         "finish_reason": "tool_calls"},
        {"role": "tool", "name": "echo", "arguments": ECHO["arguments"], "content": "hi", "isError": False,
         "approval": None},
        {"role": "tool", "name": "add", "arguments": ADD["arguments"], "content": '{"sum": 3}', "isError": False,
         "approval": None},
        {"role": "assistant", "content": "not json", "tool_calls": [], "usage": USAGE, "finish_reason": "stop"},
        {"role": "user", "content": "Your answer was rejected: ..."},  # schema feedback: not a call
        {"role": "assistant", "content": "{}", "tool_calls": [], "usage": USAGE, "finish_reason": "stop"},
    ]
    done = agent_calls(_agent(StepStatus.COMPLETED, output={"transcript": transcript}))
    assert [(c.index, c.kind, c.turn) for c in done] == [
        (0, "llm", 1), (1, "tool", 1), (2, "tool", 1), (3, "llm", 2), (4, "llm", 3)]
    assert [str(call_label(c)) for c in done[:3]] == [
        "turn 1 · llm · 28 tok → echo, add", "tool echo ✓", "tool add ✓"]

    journal = [{"index": 0, "type": "llm", "text": "", "tool_calls": [ECHO, ADD], "usage": USAGE, "model": "m",
                "finish_reason": "tool_calls", "cost_usd": 0.001},
               {"index": 1, "type": "tool", "name": "echo", "arguments": ECHO["arguments"], "text": "hi",
                "isError": False, "approval": None}]
    running = agent_calls(_agent(StepStatus.RUNNING, progress={"turns": 1, "calls": journal}))
    assert [(c.index, c.kind, c.name, c.made, c.awaiting) for c in running] == [
        (0, "llm", "", True, False), (1, "tool", "echo", True, False), (2, "tool", "add", False, False)]
    assert str(call_label(running[2])) == "tool add · not made"
    parked = agent_calls(_agent(StepStatus.WAITING, progress={"turns": 1, "calls": journal}, item=2))
    assert parked[2].awaiting and str(call_label(parked[2])) == "tool add ◷ awaiting approval"
    assert agent_calls(replace(_agent(StepStatus.COMPLETED, output={"x": 1}), kind="llm")) == []
    assert agent_calls(_agent(StepStatus.PENDING)) == []


def test_tool_states_and_inspector() -> None:
    call = AgentCall(3, "tool", 2, "The call to refund was not made: nobody approved it in time.", name="refund",
                     arguments={"amount": 5}, is_error=True, approval={"status": "timed_out", "by": None})
    assert tool_state(call) == ("timed_out", "approval timed out")
    assert str(call_label(call)) == "tool refund ⌛ approval timed out"
    assert tool_state(replace(call, approval=None)) == ("failed", "error")
    ok = replace(call, is_error=False, approval={"status": "approved", "by": "bob"}, text="x" * 5000)
    assert str(call_label(ok)) == "tool refund ✓ approved by bob"
    shown = inspect_call(_agent(StepStatus.COMPLETED, item=1), ok).plain
    assert "agent[1] · call 3" in shown and "✓ approved by bob" in shown and "(1000 more characters)" in shown
    turn = AgentCall(0, "llm", 1, "", tool_calls=(ECHO,), usage=USAGE, model="m", cost_usd=0.0123)
    shown = inspect_call(_agent(StepStatus.RUNNING), turn).plain
    assert "28 (in 20, out 8) · cost $0.0123" in shown and "no text" in shown and '"text": "hi"' in shown


def test_child_runs_from_events_and_the_store() -> None:
    detail = agent_detail(unlisted_runs()[0])
    assert child_runs(detail) == [ChildRun(rid(21), "refund-check", "check", None, "completed", None)]
    other = RunId("0f000000-0000-0000-0000-000000000000")
    waiting = EventView(99, FIXED_NOW, "step.waiting", "fan", 1, 1,
                        {"reason": "child", "child_run_id": rid(22), "workflow": "sub"})
    more = replace(detail, events=(*detail.events, waiting), children=(rid(21), rid(22), other))
    kids = child_runs(more)
    assert [(c.run_id, c.step_id, c.item, c.status) for c in kids] == [
        (rid(21), "check", None, "completed"), (rid(22), "fan", 1, None), (other, None, None, None)]
    assert str(child_label(kids[1])) == f"↳ run {rid(22)[:8]} sub"
    assert "not finished when last seen" in inspect_child(kids[1]).plain
    assert child_runs(RunDetail(detail.summary, None, None, (), ())) == []


async def test_fake_finds_unlisted_runs_without_listing_them() -> None:
    client = FakeRuntimeClient()
    assert rid(20) not in {r.run_id for r in await client.list_runs(limit=100)}
    assert (await client.get_run(rid(20)[:8])).children == (rid(21),)
    assert (await client.get_run(rid(21))).summary.parent_run_id == rid(20)
