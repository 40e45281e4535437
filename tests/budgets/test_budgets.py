"""Budgets (issue 17): an LLM call that would take a run or a workflow's day over its `budget:` does not go out.
Checked against a real OpenAI-wire peer (it counts what it received) and a real worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.llm_peer import LlmPeer
from tests.support.runtime import client_for, pending_task, running_worker, wait_status, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings

# $1000 per million tokens: a call of ~15 tokens costs ~$0.015
PRICING = "pricing: {peer-model: {input: 1000, output: 1000}}"


def two_calls(peer: LlmPeer, budget: str, name: str = "spendy") -> str:
    call = f'{{model: peer-model, base_url: "{peer.openai_url}", prompt: "hello", max_tokens: 10}}'
    big = f'{{model: peer-model, base_url: "{peer.openai_url}", prompt: "write a long answer", max_tokens: 100}}'
    return f"""
name: {name}
budget: {budget}
{PRICING}
steps:
  - {{id: first, uses: llm, retry: {{max_attempts: 1}}, with: {call}}}
  - {{id: second, uses: llm, needs: [first], retry: {{max_attempts: 1}}, with: {big}}}
"""


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


async def test_a_call_over_the_run_budget_parks_before_it_goes_out_and_approval_lets_the_run_go_on(
        settings: Settings, peer: LlmPeer) -> None:
    write_workflow(settings, "spendy.yaml", two_calls(peer, "{usd_per_run: 0.05}"))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("spendy")
        task = await pending_task(client, run_id)
        await wait_status(client, run_id, "waiting")
        assert len(peer.requests) == 1  # the second call never went out
        assert task.step_id == "second" and task.kind == "approval"
        assert task.prompt.startswith("budget exceeded: $0.05 per run (spent $0.01")
        assert "for spendy" in task.prompt and "approve to let this run go on" in task.prompt
        assert task.context["budget"] == {"usd_per_run": 0.05, "on_exceed": "ask"}
        (info,) = await client.budgets()  # what `agentrt limits` shows
        assert (info.workflow, info.usd_per_run, info.calls_today, info.asking) == ("spendy", 0.05, 1, 1)
        assert info.spent_today_usd == pytest.approx(0.015)
        code, out, err = await agentrt(settings, "limits")
        assert code == 0, err
        assert "spendy" in out and "$0.05" in out
        await client.decide(task.task_id, approve=True, reason="the customer is worth it", by="lead")
        summary = await client.wait_for_run(run_id, timeout=30)
        trail = [(a.action, a.actor) for a in await client.audit_records(run_id=run_id)]
    assert summary.status.value == "completed", summary.error
    assert len(peer.requests) == 2
    assert ("approve", "lead") in trail


async def test_rejecting_the_budget_question_fails_the_step_without_the_call(settings: Settings, peer: LlmPeer) -> None:
    write_workflow(settings, "spendy.yaml", two_calls(peer, "{tokens_per_run: 60}"))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("spendy")
        task = await pending_task(client, run_id)
        assert task.prompt.startswith("budget exceeded: 60 tokens per run (spent 15, this call up to ")
        await client.decide(task.task_id, approve=False, reason="too expensive", by="lead")
        summary = await client.wait_for_run(run_id, timeout=30)
    assert summary.status.value == "failed"
    assert "budget exceeded: 60 tokens per run" in (summary.error or "")
    assert "rejected by lead: too expensive" in (summary.error or "")
    assert len(peer.requests) == 1


async def test_on_exceed_fail_fails_the_step_and_the_daily_budget_spans_runs(settings: Settings, peer: LlmPeer) -> None:
    call = f'{{model: peer-model, base_url: "{peer.openai_url}", prompt: "hi", max_tokens: 5}}'
    write_workflow(settings, "daily.yaml", f"""
name: daily
budget: {{usd_per_day: 0.035, on_exceed: fail}}
{PRICING}
steps:
  - {{id: only, uses: llm, retry: {{max_attempts: 3}}, with: {call}}}
""")
    async with running_worker(settings), client_for(settings) as client:
        finals = []
        for _ in range(4):  # $0.015 each (estimated ~$0.007 before): two fit in $0.035, a third would not
            run_id = await client.start_run("daily")
            finals.append(await client.wait_for_run(run_id, timeout=30))
        detail = await client.get_run(finals[2].run_id)
    assert [f.status.value for f in finals] == ["completed", "completed", "failed", "failed"]
    assert "budget exceeded: $0.035/day (spent $0.03 today" in (finals[2].error or "")
    assert "(on_exceed: fail)" in (finals[2].error or "")
    assert len(detail.steps[0].attempts) == 1  # not retried: a budget is not a transient failure
    assert len(peer.requests) == 2
