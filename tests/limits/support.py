"""Load against a rate-limited LLM peer, shared by tests/limits and bench/limits_bench.py: workflows of `llm` and
`agent` steps (with or without `limit:`), a peer answer whose usage follows the prompt's size, and the figures of
one load (429s, achieved rate, how long)."""

from __future__ import annotations

import asyncio
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.llm_peer import LlmPeer, LlmRequest, openai_text, openai_tool_calls
from worker.client import RuntimeClient

RETRY = "{max_attempts: 50, initial_interval: 100ms, backoff: 1.5, max_interval: 2s, jitter: 0.5}"


def write_limits(workflows: Path, text: str) -> None:
    (workflows / "limits.yaml").write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def load_workflows(workflows: Path, peer_url: str, *, limit: str | None, suffix: str = "") -> tuple[str, str]:
    """`ask{suffix}` (one llm call) and `triage{suffix}` (an agent: a tool call, then an answer: two LLM turns);
    both opt in to `limit` when given. Returns their names."""
    opt_in = f"    limit: {limit}\n" if limit else ""
    names = (f"ask{suffix}", f"triage{suffix}")
    for name, kind, prompt, extra in ((names[0], "llm", "Summarize ticket", ""),
                                      (names[1], "agent", "agent: triage ticket", ", max_turns: 4")):
        (workflows / f"{name}.yaml").write_text(
            f"name: {name}\ninputs: {{n: {{type: integer}}}}\nsteps:\n"
            f"  - id: call\n    uses: {kind}\n    retry: {RETRY}\n{opt_in}"
            f"    with: {{model: peer-model, base_url: \"{peer_url}\", prompt: \"{prompt} ${{{{ inputs.n }}}}\", "
            f"max_tokens: 50{extra}}}\n", encoding="utf-8")
    return names


def sized_answer(request: LlmRequest) -> dict[str, Any]:
    """Usage as a provider counts it (prompt characters / 4, a short answer); an agent's first turn calls a tool
    (it has none, so the runtime tells it so and it answers on its second turn)."""
    messages = (request.body or {}).get("messages", [])
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages)
    first = str(messages[-1].get("content") or "") if messages else ""
    if first.startswith("agent:") and not request.tool_results():
        return openai_tool_calls([("lookup", {"ticket": first[-3:]})], usage=(prompt, 12))
    return openai_text("done", usage=(prompt, 20))


@dataclass
class LoadFigures:
    runs: int
    completed: int
    calls: int
    """LLM requests the peer accepted."""
    rejected: int
    """429s the peer answered."""
    seconds: float
    """From the first run started to the last finished."""
    achieved_rate: float
    """Accepted requests per second, from the first accepted to the last."""

    @property
    def rejected_share(self) -> float:
        return self.rejected / max(1, self.calls + self.rejected)


async def run_load(client: RuntimeClient, peer: LlmPeer, workflows: tuple[str, str], *, llm_runs: int,
                   agent_runs: int, timeout: float = 120.0) -> LoadFigures:
    """Start the runs at once, wait for all; the figures from the peer's side."""
    before_accepted, before_rejected = len(peer.accepted), len(peer.rejections)
    started = time.monotonic()
    ids = await client.start_runs(workflows[0], [{"n": i} for i in range(llm_runs)]) if llm_runs else []
    if agent_runs:
        ids += await client.start_runs(workflows[1], [{"n": i} for i in range(agent_runs)])
    deadline = started + timeout
    pending = set(ids)
    completed = 0
    while pending:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} of {len(ids)} runs unfinished after {timeout:g}s")
        for run in await client.list_runs(limit=max(500, len(ids) * 2)):
            if run.run_id in pending and run.status.value in ("completed", "failed", "cancelled"):
                pending.discard(run.run_id)
                completed += run.status.value == "completed"
        if pending:
            await asyncio.sleep(0.2)
    seconds = time.monotonic() - started
    accepted = peer.accepted[before_accepted:]
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    return LoadFigures(len(ids), completed, len(accepted), len(peer.rejections) - before_rejected, seconds,
                       (len(accepted) - 1) / span if span > 0 else 0.0)
