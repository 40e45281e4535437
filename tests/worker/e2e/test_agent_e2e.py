"""`llm`, `tool` and `agent` steps run by a real worker (Postgres, Redis), with real LLM and MCP peers."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.llm_peer import LlmPeer, LlmRequest, Reply, openai_text, openai_tool_calls
from tests.support.mcp_servers import RECORDING_SERVER, read_calls
from tests.support.runtime import client_for, pending_task, running_worker, write_workflow
from tests.support.services import WorkerProcs
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings

REPO_WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The workflows here declare their stdio MCP server under `tools:`: the operator's opt-in allows it."""
    return replace(settings, workflow_stdio_tools=True)


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


def _agent_workflow(settings: Settings, log: Path, *, extra: str = "", retry: str = "") -> None:
    write_workflow(settings, "support.yaml", f"""
        name: support
        inputs: {{llm: {{type: string}}, ticket: {{type: string, default: T-1}}}}
        tools:
          helpdesk:
            command: {sys.executable}
            args: [{RECORDING_SERVER}]
            env: {{MCP_CALL_LOG: {log}}}
        pricing: {{m: {{input: 2.0, output: 10.0}}}}
        steps:
          - id: agent
            uses: agent
            retry: {{max_attempts: 5, initial_interval: 100ms, max_interval: 500ms}}
            with:
              model: m
              base_url: "${{{{ inputs.llm }}}}"
              system: You resolve support tickets.
              prompt: "Refund ticket ${{{{ inputs.ticket }}}}"
              servers: [helpdesk]
              {extra}
          - id: summary
            uses: set
            with: {{answer: "${{{{ steps.agent.output.answer }}}}"}}
    """)


def _refund_then_answer(req: LlmRequest) -> dict[str, Any] | Reply:
    results = req.tool_results()
    if not results:
        return openai_tool_calls([("refund", {"ticket": "T-1", "amount": 40})], usage=(100, 10))
    return openai_text(f"Done. Tool said: {results[-1]}", usage=(150, 20))


async def test_agent_run_completes_with_tokens_and_cost(settings: Settings, peer: LlmPeer, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    peer.responder = _refund_then_answer
    _agent_workflow(settings, log)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        summary = await client.wait_for_run(run_id, timeout=60)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    out = detail.steps[0].output
    assert out["answer"] == "Done. Tool said: refunded 40 on T-1"
    assert out["usage"] == {"input_tokens": 250, "output_tokens": 30, "total_tokens": 280}
    assert out["cost_usd"] == pytest.approx(250 * 2e-6 + 30 * 10e-6)
    assert detail.output == {"answer": "Done. Tool said: refunded 40 on T-1"}
    assert peer.keys() == [f"agentrt:{run_id}:agent", f"agentrt:{run_id}:agent.2"]
    assert [c["key"] for c in read_calls(log)] == [f"agentrt:{run_id}:agent.1"]
    # `agentrt show`: tokens and cost per step and for the run
    rc, text, _ = await agentrt(settings, "show", run_id)
    assert rc == 0 and "TOKENS" in text and "280" in text and "$0.0008" in text
    assert "tokens: 280 (input 250, output 30) in 1 llm/agent step(s); cost $0.0008" in text
    rc, text, _ = await agentrt(settings, "show", run_id, "--json")
    assert rc == 0 and json.loads(text)["usage"]["total_tokens"] == 280


async def test_kill9_between_tool_call_and_next_llm_turn_repeats_nothing_completed(
        settings: Settings, peer: LlmPeer, worker_procs: WorkerProcs, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    slow_once: list[bool] = []

    def respond(req: LlmRequest) -> dict[str, Any] | Reply:
        if req.tool_results() and not slow_once:
            slow_once.append(True)
            return Reply(200, {}, openai_text("too late"), delay=30)  # the worker dies while waiting
        return _refund_then_answer(req)

    peer.responder = respond
    _agent_workflow(settings, log)
    first = worker_procs.start(name="first")
    first.wait_for_log("worker test-first")
    async with client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        key = f"agentrt:{run_id}:agent"
        assert await asyncio.to_thread(peer.wait_for, lambda p: f"{key}.2" in p.keys(), 40)  # noqa: SIM118
        assert [c["key"] for c in read_calls(log)] == [f"{key}.1"]
        first.kill()
        worker_procs.start(name="second")
        summary = await client.wait_for_run(run_id, timeout=60)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    per_key = Counter(peer.keys())
    assert per_key[key] == 1  # the completed first turn is not asked again
    assert per_key[f"{key}.2"] == 2  # the turn in flight at the kill is asked again, with the same key
    assert [c["key"] for c in read_calls(log)] == [f"{key}.1"]  # the refund happened once
    assert detail.steps[0].output["answer"].startswith("Done.")
    assert any(e.type == "run.resumed" for e in detail.events)


async def test_approve_tools_approved(settings: Settings, peer: LlmPeer, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    peer.responder = _refund_then_answer
    _agent_workflow(settings, log, extra="approve_tools: [refund]")
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        task = await pending_task(client, run_id, timeout=30)
        assert task.context == {"tool": "refund", "server": "helpdesk", "arguments": {"ticket": "T-1", "amount": 40}}
        assert "refund" in task.prompt and read_calls(log) == []
        # parked after its first LLM turn: the tokens used so far are visible (journal), in show too
        parked = (await client.get_run(run_id)).steps[0]
        assert parked.output is None and parked.progress is not None and parked.progress["turns"] == 1
        assert parked.usage == {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110,
                                "cost_usd": pytest.approx(100 * 2e-6 + 10 * 10e-6)}
        rc, text, _ = await agentrt(settings, "show", run_id)
        assert rc == 0 and "tokens: 110 (input 100, output 10) in 1 llm/agent step(s)" in text
        await client.decide(task.task_id, approve=True, by="alice", reason="fine")
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    assert [c["tool"] for c in read_calls(log)] == ["refund"]
    assert len(peer.requests) == 2  # the turn before the approval was not asked again
    tool_msg = detail.steps[0].output["transcript"][3]
    assert tool_msg["approval"]["status"] == "approved" and tool_msg["approval"]["by"] == "alice"


async def test_parked_agent_shows_its_calls_so_far(settings: Settings, peer: LlmPeer, tmp_path: Path) -> None:
    """`get_run` of an agent parked on a tool approval: the journal's turn and calls, tool names paired."""
    log = tmp_path / "calls.jsonl"

    def echo_then_refund(req: LlmRequest) -> dict[str, Any] | Reply:
        if not req.tool_results():
            return openai_tool_calls([("echo", {"text": "checked T-1"}), ("refund", {"ticket": "T-1", "amount": 40})],
                                     usage=(100, 10))
        return openai_text("Done.", usage=(150, 20))

    peer.responder = echo_then_refund
    _agent_workflow(settings, log, extra="approve_tools: [refund]")
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        task = await pending_task(client, run_id, timeout=30)
        parked = (await client.get_run(run_id)).steps[0]
        await client.decide(task.task_id, approve=False, by="bob", reason="not today")
        summary = await client.wait_for_run(run_id, timeout=30)
    assert parked.output is None and parked.status.value == "waiting"
    calls = parked.progress["calls"]
    assert [(c["index"], c["type"]) for c in calls] == [(0, "llm"), (1, "tool")]
    assert [t["name"] for t in calls[0]["tool_calls"]] == ["echo", "refund"]
    assert calls[0]["usage"]["total_tokens"] == 110 and calls[0]["finish_reason"] == "tool_calls"
    assert calls[1]["name"] == "echo" and calls[1]["arguments"] == {"text": "checked T-1"}
    assert calls[1]["text"] == "checked T-1" and calls[1]["isError"] is False
    assert parked.progress["turns"] == 1 and parked.progress["usage"]["total_tokens"] == 110
    assert summary.status.value == "completed", summary.error
    assert [c["tool"] for c in read_calls(log)] == ["echo"]


async def test_approve_tools_rejected_is_fed_back(settings: Settings, peer: LlmPeer, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    peer.responder = _refund_then_answer
    _agent_workflow(settings, log, extra="approve_tools: [refund]")
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        task = await pending_task(client, run_id, timeout=30)
        await client.decide(task.task_id, approve=False, by="bob", reason="needs a manager")
        summary = await client.wait_for_run(run_id, timeout=30)
    assert summary.status.value == "completed", summary.error
    assert read_calls(log) == []
    assert "bob rejected it: needs a manager" in peer.requests[-1].tool_results()[0]


async def test_approve_tools_timeout_counts_as_refusal(settings: Settings, peer: LlmPeer, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    peer.responder = _refund_then_answer
    _agent_workflow(settings, log, extra="approve_tools: [refund]\n              approval_timeout: 500ms")
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        summary = await client.wait_for_run(run_id, timeout=30)
    assert summary.status.value == "completed", summary.error
    assert read_calls(log) == []
    assert "nobody approved it in time" in peer.requests[-1].tool_results()[0]


async def test_tool_steps_is_error_crash_and_hang(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    write_workflow(settings, "tools.yaml", f"""
        servers:
          rec:
            command: {sys.executable}
            args: [{RECORDING_SERVER}]
            env: {{MCP_CALL_LOG: {log}}}
    """)
    write_workflow(settings, "tooling.yaml", """
        name: tooling
        defaults: {retry: {max_attempts: 2, initial_interval: 50ms}}
        steps:
          - {id: bad, uses: tool, continue_on_error: true,
             with: {server: rec, tool: fail, arguments: {message: "ticket is locked"}}}
          - {id: dies, uses: tool, continue_on_error: true, with: {server: rec, tool: crash}}
          - {id: hangs, uses: tool, continue_on_error: true,
             with: {server: rec, tool: sleep, arguments: {seconds: 30}, timeout: 300ms}}
          - {id: fine, uses: tool, with: {server: rec, tool: echo, arguments: {text: "still works"}}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("tooling")
        summary = await client.wait_for_run(run_id, timeout=60)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    bad, dies, hangs, fine = detail.steps
    assert bad.status.value == "failed" and len(bad.attempts) == 1 and "ticket is locked" in (bad.error or "")
    assert dies.status.value == "failed" and len(dies.attempts) == 2  # retryable, then out of attempts
    assert hangs.status.value == "failed" and len(hangs.attempts) == 2 and "0.3s" in (hangs.error or "")
    assert fine.output["text"] == "still works"
    calls = read_calls(log)
    assert [c["key"] for c in calls if c["tool"] == "crash"] == [f"agentrt:{run_id}:dies"] * 2


async def test_research_demo_runs_offline_on_a_worker(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.devmodel import start_demo_model

    repo = REPO_WORKFLOWS
    shutil.copy(repo / "tools.yaml", settings.workflows_dir / "tools.yaml")
    shutil.copy(repo / "research-summary.yaml", settings.workflows_dir / "research-summary.yaml")
    shutil.copytree(repo / "mcp_servers", settings.workflows_dir / "mcp_servers")
    model = start_demo_model()
    monkeypatch.setenv("AGENTRT_DEMO_MODEL_URL", model.base_url)
    try:
        async with running_worker(settings), client_for(settings) as client:
            run_id = await client.start_run("research-summary", {})
            summary = await client.wait_for_run(run_id, timeout=60)
            detail = await client.get_run(run_id)
    finally:
        model.stop()
    assert summary.status.value == "completed", summary.error
    assert detail.output["headline"] == {"headline": "demo", "confidence": "low"}
    assert detail.output["summary"].startswith("[offline demo model] Summary")
    assert detail.steps[0].output["model"] == "agentrt-offline-demo"


async def test_llm_step_429_then_retried_with_the_same_key(settings: Settings, peer: LlmPeer) -> None:
    peer.script([Reply(429, {"Retry-After": "0.3"}, {"error": {"message": "rate limited"}}),
                 openai_text('{"priority": "high"}', usage=(30, 4))])
    write_workflow(settings, "classify.yaml", """
        name: classify
        inputs: {llm: {type: string}, text: {type: string}}
        steps:
          - id: classify
            uses: llm
            retry: {max_attempts: 3, initial_interval: 50ms}
            with:
              model: m
              base_url: "${{ inputs.llm }}"
              prompt: "Classify: ${{ inputs.text }}"
              schema: {type: object, properties: {priority: {enum: [low, high]}}, required: [priority]}
        output: "${{ steps.classify.output.json.priority }}"
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("classify", {"llm": peer.openai_url, "text": "site is down"})
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    assert detail.output == "high"
    assert peer.keys() == [f"agentrt:{run_id}:classify"] * 2
    first, second = detail.steps[0].attempts
    assert second.status == "completed"
    assert first.status == "failed" and "429" in (first.error or "")
    assert peer.requests[1].at - peer.requests[0].at >= 0.3  # Retry-After honoured
    assert detail.steps[0].output["usage"]["total_tokens"] == 34
