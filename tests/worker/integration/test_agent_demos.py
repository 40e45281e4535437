"""The shipped demo workflows run offline: the demo model (worker/devmodel.py) and the example MCP servers."""

from __future__ import annotations

import itertools
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.llm_peer import MemoryJournal, step_context
from worker.config import Settings
from worker.definitions import load_file, render
from worker.devmodel import DemoModelServer, start_demo_model
from worker.errors import StepParked
from worker.steps.agent import AgentExecutor
from worker.steps.llm import LlmExecutor
from worker.steps.providers.openai import OpenAIStream

REPO_WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"


@pytest.fixture
def demo_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoModelServer]:
    server = start_demo_model(tokens_per_s=0)  # streamed answers unpaced: these tests are about the playbook
    monkeypatch.setenv("AGENTRT_DEMO_MODEL_URL", server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield server
    server.stop()


def _step_args(workflow: str, step_id: str, inputs: dict[str, object] | None = None,
               steps: dict[str, object] | None = None) -> dict[str, object]:
    defn = load_file(REPO_WORKFLOWS / workflow)
    values = {name: spec.default for name, spec in defn.spec.inputs.items()} | (inputs or {})
    ctx = {"inputs": values, "steps": steps or {}, "run": {"id": "r", "workflow": defn.name}}
    return render(defn.step(step_id).with_, ctx)  # type: ignore[no-any-return]


def test_demo_model_speaks_the_openai_format(demo_model: DemoModelServer) -> None:
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request(demo_model.base_url + "/chat/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["model"] == "agentrt-offline-demo"
    assert answer["choices"][0]["message"]["content"].startswith("[offline demo model]")
    assert answer["usage"]["total_tokens"] > 0


async def test_support_triage_demo_offline_with_approval(demo_model: DemoModelServer) -> None:
    agent = AgentExecutor(Settings(http_allowed_hosts=("127.0.0.1",), workflows_dir=REPO_WORKFLOWS))
    args = _step_args("support-triage.yaml", "triage")
    journal = MemoryJournal()
    try:
        with pytest.raises(StepParked) as parked:
            await agent.execute(args, step_context(journal=journal, step_id="triage"))
        assert parked.value.context["tool"] == "reply_to_customer"  # type: ignore[index]
        decisions = {parked.value.key: {"status": "approved", "by": "ops", "reason": None}}
        out = await agent.execute(args, step_context(journal=journal, step_id="triage", decisions=decisions))
    finally:
        await agent.aclose()
    assert out["stop_reason"] == "final_answer"
    assert out["answer"].startswith("[offline demo model] Triage of T-1001: priority high")
    assert "reply sent to Ada" in out["answer"]
    tools = [m["name"] for m in out["transcript"] if m["role"] == "tool"]
    assert tools == ["get_ticket", "search_kb", "set_priority", "reply_to_customer"]
    assert out["model"] == "agentrt-offline-demo" and out["cost_usd"] == 0.0


async def test_research_demo_offline(demo_model: DemoModelServer) -> None:
    settings = Settings(http_allowed_hosts=("127.0.0.1",), workflows_dir=REPO_WORKFLOWS)
    agent, llm = AgentExecutor(settings), LlmExecutor(settings)
    try:
        research = await agent.execute(_step_args("research-summary.yaml", "research"),
                                       step_context(journal=MemoryJournal(), step_id="research"))
        headline = await llm.execute(_step_args("research-summary.yaml", "headline",
                                                steps={"research": {"output": research}}),
                                     step_context(step_id="headline"))
    finally:
        await agent.aclose()
        await llm.aclose()
    assert "Durable execution" in research["answer"] and "Idempotency keys" in research["answer"]
    assert headline["json"] == {"headline": "demo", "confidence": "low"}


def test_demo_workflows_and_tools_file_are_valid(tmp_path: Path) -> None:
    from worker.definitions.loader import load_tools_file

    tools = load_tools_file(REPO_WORKFLOWS / "tools.yaml")
    assert set(tools.servers) >= {"helpdesk", "notes"}
    for name in ("support-triage.yaml", "research-summary.yaml"):
        assert load_file(REPO_WORKFLOWS / name).name == name.removesuffix(".yaml")
    shutil.copy(REPO_WORKFLOWS / "tools.yaml", tmp_path / "tools.yaml")


# what the demo model is asked for in the demos: plain text, one tool call, two tool calls, a JSON answer
_HELPDESK_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                   for n in ("get_ticket", "search_kb", "set_priority", "reply_to_customer")]
_NOTES_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                for n in ("search_notes", "read_note")]
_REQUESTS: dict[str, dict[str, Any]] = {
    "text": {"messages": [{"role": "user", "content": "hello, what can you do for the on-call engineer?"}]},
    "one tool call": {"messages": [{"role": "user", "content": "Triage ticket T-1001"}], "tools": _HELPDESK_TOOLS},
    "two tool calls": {"tools": _NOTES_TOOLS, "messages": [
        {"role": "user", "content": "durable execution"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search_notes", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1",
         "content": json.dumps({"results": [{"id": "n-1"}, {"id": "n-22"}]})}]},
    "json answer": {"messages": [{"role": "user", "content": "headline"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "h", "schema": {
            "type": "object", "properties": {"headline": {"type": "string"},
                                             "confidence": {"enum": ["low", "high"]}}}}}},
}


def _streamed(url: str, body: dict[str, Any], *,
              include_usage: bool = True) -> tuple[dict[str, Any], list[float], httpx.Headers]:
    """The answer assembled by the worker's own OpenAI stream reader, and when each event arrived."""
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    reader, arrivals = OpenAIStream(), []
    started = time.monotonic()
    with httpx.stream("POST", url + "/chat/completions", json={**body, "stream": True, **options},
                      timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                reader.feed(None, line.removeprefix("data: "))
                arrivals.append(time.monotonic() - started)
    assert reader.finished  # the stream ended with [DONE]
    return reader.body(), arrivals, response.headers


@pytest.mark.parametrize("kind", list(_REQUESTS))
def test_a_streamed_reply_assembles_to_the_plain_one(demo_model: DemoModelServer, kind: str) -> None:
    body = {"model": "x", **_REQUESTS[kind]}
    plain = httpx.post(demo_model.base_url + "/chat/completions", json=body, timeout=10).json()
    assembled, arrivals, headers = _streamed(demo_model.base_url, body)
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert assembled["choices"] == plain["choices"]  # text, tool calls (ids, names, arguments), finish reason
    assert assembled["usage"] == plain["usage"] and assembled["model"] == plain["model"] == "agentrt-offline-demo"
    assert len(arrivals) >= 6  # role, several pieces, finish, usage, [DONE]
    if kind != "text":
        calls = plain["choices"][0]["message"].get("tool_calls") or []
        assert len(calls) == {"one tool call": 1, "two tool calls": 2, "json answer": 0}[kind]
    without_usage, _, _ = _streamed(demo_model.base_url, body, include_usage=False)
    assert without_usage["usage"] is None and without_usage["choices"] == plain["choices"]


def test_a_streamed_reply_arrives_in_pieces_over_time() -> None:
    server = start_demo_model(tokens_per_s=100)
    try:
        body = {"model": "x", **_REQUESTS["text"]}
        plain = httpx.post(server.base_url + "/chat/completions", json=body, timeout=10).json()
        assembled, arrivals, _ = _streamed(server.base_url, body)
    finally:
        server.stop()
    text = plain["choices"][0]["message"]["content"]
    assert assembled["choices"][0]["message"]["content"] == text
    pieces = len(arrivals) - 4  # the role chunk, the finish chunk, the usage chunk, [DONE]
    assert pieces >= len(text) / 6  # token-sized pieces (about four characters each)
    # paced at 100 pieces a second: the first piece comes at once, the last (pieces - 1) / 100 s later
    assert arrivals[1] < 0.5
    assert arrivals[-1] - arrivals[1] >= 0.8 * (pieces - 1) / 100
    gaps = [b - a for a, b in itertools.pairwise(arrivals[1:pieces + 1])]
    assert sum(g > 0.004 for g in gaps) >= 0.8 * len(gaps)  # one by one, not in a burst


def test_the_demo_model_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import devmodel

    monkeypatch.setenv("AGENTRT_DEMO_MODEL_TPS", "0")
    server = start_demo_model()
    try:
        assert server.tokens_per_s == 0
        _, arrivals, _ = _streamed(server.base_url, {"model": "x", **_REQUESTS["text"]})
        assert arrivals[-1] < 0.5  # unpaced
    finally:
        server.stop()
    monkeypatch.delenv("AGENTRT_DEMO_MODEL_TPS")
    assert devmodel.tokens_per_s_from_env() == devmodel.DEFAULT_TPS == 40
    monkeypatch.setenv("AGENTRT_DEMO_MODEL_TPS", "fast")
    with pytest.raises(ValueError, match="AGENTRT_DEMO_MODEL_TPS"):
        start_demo_model()
    # a long answer is sent faster rather than taking more than MAX_STREAM_SECONDS
    assert devmodel._pause(40, 11) == 1 / 40
    assert devmodel._pause(40, 1001) == pytest.approx(devmodel.MAX_STREAM_SECONDS / 1000)
    assert devmodel._pause(0, 100) == 0.0
