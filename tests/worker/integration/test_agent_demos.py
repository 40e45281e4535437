"""The shipped demo workflows run offline: the demo model (worker/devmodel.py) and the example MCP servers."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.llm_peer import MemoryJournal, step_context
from worker.config import Settings
from worker.definitions import load_file, render
from worker.devmodel import DemoModelServer, start_demo_model
from worker.errors import StepParked
from worker.steps.agent import AgentExecutor
from worker.steps.llm import LlmExecutor

REPO_WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"


@pytest.fixture
def demo_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoModelServer]:
    server = start_demo_model()
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
