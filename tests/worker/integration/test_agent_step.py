"""The `agent` executor: LLM peer + real MCP server, an in-memory journal, approvals via decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.llm_peer import (
    LlmPeer,
    LlmRequest,
    MemoryJournal,
    anthropic_text,
    anthropic_tool_use,
    openai_text,
    openai_tool_calls,
    step_context,
)
from tests.support.mcp_servers import read_calls, stdio_declaration
from worker.config import Settings
from worker.errors import StepFailed, StepParked
from worker.steps.agent import AgentExecutor


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[AgentExecutor]:
    # stdio servers declared inline (the operator's opt-in)
    ex = AgentExecutor(Settings(http_allowed_hosts=("127.0.0.1",), workflows_dir=tmp_path, workflow_stdio_tools=True))
    yield ex
    await ex.aclose()


def _args(peer: LlmPeer, log: Path, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "base_url": peer.openai_url, "system": "You are a support agent.",
            "prompt": "Refund ticket T-1 (40 EUR).", "servers": [stdio_declaration(log)], **extra}


async def test_loop_tools_then_answer_with_usage_and_transcript(peer: LlmPeer, agent: AgentExecutor,
                                                                tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    peer.script([openai_tool_calls([("add", {"a": 40, "b": 2}), ("echo", {"text": "noted"})]),
                 openai_text("Done: 42.", usage=(50, 5))])
    journal = MemoryJournal()
    out = await agent.execute(_args(peer, log, pricing={"m": {"input": 1.0, "output": 1.0}}),
                              step_context(journal=journal))
    assert out["answer"] == "Done: 42." and out["stop_reason"] == "final_answer"
    assert out["turns"] == 2 and out["tool_calls"] == 2
    assert out["usage"] == {"input_tokens": 70, "output_tokens": 13, "total_tokens": 83}
    assert out["cost_usd"] == pytest.approx(83e-6)
    assert [m["role"] for m in out["transcript"]] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert journal.recorded == [0, 1, 2, 3]
    # keys: call i gets key_for(i); the tools got theirs in _meta
    assert peer.keys() == ["agentrt:run-1:s", "agentrt:run-1:s.3"]
    assert [c["key"] for c in read_calls(log)] == ["agentrt:run-1:s.1", "agentrt:run-1:s.2"]
    second = peer.requests[1].body
    assert [t["function"]["name"] for t in second["tools"]][:2] == ["echo", "add"]
    assert second["messages"][-2]["role"] == "tool" and "42" in second["messages"][-2]["content"]


async def test_resume_from_journal_repeats_no_completed_call(peer: LlmPeer, agent: AgentExecutor,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    # the first attempt dies after the tool call was committed, before the second LLM turn is committed
    peer.script([openai_tool_calls([("refund", {"ticket": "T-1", "amount": 40})]),
                 openai_text("crash here", usage=(1, 1))])

    class Crash(Exception):
        pass

    class CrashingJournal(MemoryJournal):
        async def record(self, call_index: int, data: Any) -> None:
            if call_index == 2:
                raise Crash
            await super().record(call_index, data)

    crashing = CrashingJournal()
    with pytest.raises(Crash):
        await agent.execute(_args(peer, log), step_context(journal=crashing))
    journal = MemoryJournal(crashing.entries)
    peer.script([openai_text("Refunded.")])
    out = await agent.execute(_args(peer, log), step_context(journal=journal))
    assert out["answer"] == "Refunded."
    assert [c["tool"] for c in read_calls(log)] == ["refund"]  # not called again
    # turn 1 once; turn 2 twice (never committed the first time), same key
    assert peer.keys() == ["agentrt:run-1:s", "agentrt:run-1:s.2", "agentrt:run-1:s.2"]
    assert journal.recorded == [2]


async def test_approval_parks_then_approved_call_is_made(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    peer.script([openai_tool_calls([("refund", {"ticket": "T-1", "amount": 40})])])
    journal = MemoryJournal()
    args = _args(peer, log, approve_tools=["refund"], approval_timeout="1h")
    with pytest.raises(StepParked) as parked:
        await agent.execute(args, step_context(journal=journal))
    assert parked.value.key == "tool-1" and parked.value.timeout == 3600
    assert parked.value.context == {"tool": "refund", "server": "rec", "arguments": {"ticket": "T-1", "amount": 40}}
    assert read_calls(log) == []
    peer.script([openai_text("Refund issued.")])
    decisions = {"tool-1": {"status": "approved", "by": "alice", "reason": "ok"}}
    out = await agent.execute(args, step_context(journal=journal, decisions=decisions))
    assert out["answer"] == "Refund issued."
    assert [c["key"] for c in read_calls(log)] == ["agentrt:run-1:s.1"]
    assert out["transcript"][3]["approval"] == {"status": "approved", "by": "alice", "reason": "ok"}
    assert len(peer.requests) == 2  # the first turn was not asked again


@pytest.mark.parametrize(("status", "expect"), [("rejected", "bob rejected it: too much"),
                                                ("timed_out", "nobody approved it in time")])
async def test_refusal_is_fed_back_to_the_model(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path,
                                                status: str, expect: str) -> None:
    log = tmp_path / "calls.jsonl"
    journal = MemoryJournal()
    peer.script([openai_tool_calls([("refund", {"ticket": "T-1", "amount": 400})]), openai_text("Escalated.")])
    args = _args(peer, log, approve_tools=["refund"])
    with pytest.raises(StepParked):
        await agent.execute(args, step_context(journal=journal))
    decisions = {"tool-1": {"status": status, "by": "bob", "reason": "too much"}}
    out = await agent.execute(args, step_context(journal=journal, decisions=decisions))
    assert out["answer"] == "Escalated." and read_calls(log) == []
    fed_back = peer.requests[-1].tool_results()
    assert len(fed_back) == 1 and expect in fed_back[0]
    assert peer.requests[-1].body["messages"][-1]["role"] == "tool"


async def test_tool_is_error_goes_back_to_the_model(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path) -> None:
    peer.script([openai_tool_calls([("fail", {"message": "no such ticket"})]), openai_text("Sorry.")])
    out = await agent.execute(_args(peer, tmp_path / "c.jsonl"), step_context(journal=MemoryJournal()))
    assert out["answer"] == "Sorry." and out["transcript"][3]["isError"] is True
    (fed_back,) = peer.requests[-1].tool_results()
    assert "no such ticket" in fed_back


async def test_tool_server_crash_is_a_retryable_failure(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path) -> None:
    peer.script([openai_tool_calls([("crash", {})])])
    journal = MemoryJournal()
    with pytest.raises(StepFailed) as info:
        await agent.execute(_args(peer, tmp_path / "c.jsonl"), step_context(journal=journal))
    assert info.value.retryable and journal.recorded == [0]


async def test_max_turns_and_token_budget(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path) -> None:
    peer.responder = lambda req: openai_tool_calls([("echo", {"text": "again"})], usage=(60, 40))
    out = await agent.execute(_args(peer, tmp_path / "c.jsonl", max_turns=3), step_context(journal=MemoryJournal()))
    assert out["stop_reason"] == "max_turns" and out["turns"] == 3 and out["answer"] is None
    out = await agent.execute(_args(peer, tmp_path / "c.jsonl", token_budget=150),
                              step_context(journal=MemoryJournal(), step_id="b"))
    assert out["stop_reason"] == "token_budget" and out["turns"] == 2 and out["usage"]["total_tokens"] == 200


async def test_structured_answer_mismatch_is_fed_back(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"refund": {"type": "boolean"}}, "required": ["refund"]}
    peer.script([openai_text('{"refund": "yes"}'), openai_text('{"refund": true}')])
    out = await agent.execute({**_args(peer, tmp_path / "c.jsonl"), "servers": [], "schema": schema},
                              step_context(journal=MemoryJournal()))
    assert out["json"] == {"refund": True} and out["turns"] == 2
    assert "does not match the schema" in peer.requests[1].body["messages"][-1]["content"]


async def test_anthropic_agent(peer: LlmPeer, agent: AgentExecutor, tmp_path: Path) -> None:
    def respond(req: LlmRequest) -> dict[str, Any]:
        if not req.tool_results():
            return anthropic_tool_use([("add", {"a": 1, "b": 2}), ("echo", {"text": "x"})])
        return anthropic_text("three")

    peer.responder = respond
    out = await agent.execute({**_args(peer, tmp_path / "c.jsonl"), "provider": "anthropic", "base_url": peer.url},
                              step_context(journal=MemoryJournal()))
    assert out["answer"] == "three"
    last = peer.requests[-1].body["messages"]
    assert last[1]["role"] == "assistant" and [b["type"] for b in last[1]["content"]] == ["tool_use", "tool_use"]
    assert last[2]["role"] == "user" and [b["type"] for b in last[2]["content"]] == ["tool_result", "tool_result"]
    assert peer.requests[0].body["tools"][0]["input_schema"]["type"] == "object"


async def test_a_journal_that_does_not_match_the_loop_is_refused(peer: LlmPeer, agent: AgentExecutor,
                                                                 tmp_path: Path) -> None:
    journal = MemoryJournal({0: {"type": "tool", "text": "?", "isError": False}})
    with pytest.raises(StepFailed) as info:
        await agent.execute({**_args(peer, tmp_path / "c.jsonl"), "servers": []}, step_context(journal=journal))
    assert not info.value.retryable and "journal entry 0" in info.value.reason
    assert peer.requests == []
