"""The offline demo model streams (worker/devmodel.py): a real worker running a shipped demo workflow against
it puts the model's text and tool calls on the run's live stream as they are written, paced like a real model,
and commits the same answers a plain call would."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runtime import client_for, running_worker
from worker.config import Settings
from worker.devmodel import DemoModelServer, start_demo_model
from worker.streams.entries import LLM_DELTA, LLM_DONE
from worker.streams.fold import LiveText

REPO_WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"


@pytest.fixture
def demo_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoModelServer]:
    monkeypatch.delenv("AGENTRT_DEMO_MODEL_TPS", raising=False)
    server = start_demo_model()  # the default pace, as `agentrt dev` runs it
    monkeypatch.setenv("AGENTRT_DEMO_MODEL_URL", server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield server
    server.stop()


async def test_a_demo_run_streams_live_deltas(settings: Settings, demo_model: DemoModelServer) -> None:
    assert demo_model.tokens_per_s == 40
    shutil.copy(REPO_WORKFLOWS / "tools.yaml", settings.workflows_dir / "tools.yaml")
    shutil.copy(REPO_WORKFLOWS / "research-summary.yaml", settings.workflows_dir / "research-summary.yaml")
    shutil.copytree(REPO_WORKFLOWS / "mcp_servers", settings.workflows_dir / "mcp_servers")
    live = LiveText()
    deltas: list[tuple[float, str, int]] = []  # (arrival, step, turn) of each llm.delta
    done = 0
    async with running_worker(settings), client_for(settings) as client:
        started = time.monotonic()
        run_id = await client.start_run("research-summary", {})
        async for entry in client.follow_live(run_id):  # until the run has finished
            live.feed(entry)
            if entry.type == LLM_DELTA:
                deltas.append((time.monotonic(), entry.step_id, entry.turn or 0))
            done += entry.type == LLM_DONE
        took = time.monotonic() - started
        detail = await client.get_run(run_id)
    assert detail.summary.status.value == "completed", detail.summary.error
    research, headline = detail.steps[0].output, detail.steps[1].output
    # the agent's three turns (search, read two notes, answer) and the headline: each call streamed and ended
    calls = live.of_step("research")
    assert [c.turn for c in calls] == [0, 1, 2] and all(c.done and not c.abandoned for c in calls)
    assert [t["name"] for t in calls[0].tools.values()] == ["search_notes"]
    assert [t["name"] for t in calls[1].tools.values()] == ["read_note", "read_note"]
    assert calls[2].text == research["answer"] and calls[2].text.startswith("[offline demo model] Summary")
    assert live.current("headline").text == headline["text"]  # type: ignore[union-attr]
    assert done == 4
    # live: the answer came in many deltas spread over its writing, not in one piece at the end
    answer = [at for at, step, turn in deltas if step == "research" and turn == 2]
    assert len(answer) >= 5, deltas
    assert answer[-1] - answer[0] >= 0.5
    assert 10 < (calls[2].output_tokens_per_s or 0) < 80  # the worker measured about the demo model's 40/s
    assert took < 30  # the demo stays quick at the default pace
