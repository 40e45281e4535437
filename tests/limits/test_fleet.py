"""Three real workers (in-process WorkerServices on one Postgres and one Redis) run llm and agent steps against a
peer that enforces its own rate limits: with `limit:` set to what the peer allows, the fleet paces itself; without
it, the peer answers 429s. Small rates keep it to seconds (bench/limits_bench.py has the 300-run version)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.limits.support import load_workflows, run_load, sized_answer, write_limits
from tests.support.llm_peer import LlmPeer
from tests.support.runtime import client_for, running_worker
from worker.config import Settings
from worker.engine.service import WorkerService

RATE = 20  # requests a second, the peer's and the limit's
TOKENS = 1500  # tokens a second


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        p.responder = sized_answer
        p.limit(requests=RATE, tokens=TOKENS, per=1.0)
        yield p


@contextlib.asynccontextmanager
async def fleet(settings: Settings, count: int = 3) -> AsyncIterator[list[WorkerService]]:
    async with contextlib.AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(running_worker(settings, worker_id=f"limits-w{i}"))
                   for i in range(count)]
        yield workers


async def test_three_workers_pace_themselves_to_the_limit_the_peer_enforces(settings: Settings,
                                                                           peer: LlmPeer) -> None:
    write_limits(settings.workflows_dir, f"limits:\n  peer: {{requests: {RATE}/s, tokens: {TOKENS}/s}}\n")
    names = load_workflows(settings.workflows_dir, peer.openai_url, limit="peer")
    async with client_for(settings) as client:
        async with fleet(settings) as workers:
            figures = await run_load(client, peer, names, llm_runs=60, agent_runs=20)
            report = await client.limits()
            assert all(w.limiter is not None and w.limiter.mode == "redis" for w in workers)
        (peer_limit,) = (await client.limits()).limits  # once the workers stopped (slots taken ahead are back)
    assert figures.completed == figures.runs == 80
    assert figures.calls == 60 + 2 * 20
    assert figures.rejected <= 0.01 * figures.calls, figures
    assert figures.achieved_rate >= 0.9 * RATE, figures
    assert figures.achieved_rate <= 1.25 * RATE, figures  # paced: not the peer's burst
    assert report.mode == "redis" and len(report.workers) == 3
    assert peer_limit.granted == 100 and peer_limit.throttled and peer_limit.rejected_429 == figures.rejected


async def test_without_the_limit_the_same_load_meets_429s(settings: Settings, peer: LlmPeer) -> None:
    names = load_workflows(settings.workflows_dir, peer.openai_url, limit=None)
    async with fleet(settings), client_for(settings) as client:
        figures = await run_load(client, peer, names, llm_runs=60, agent_runs=20)
    assert figures.completed == figures.runs == 80
    assert figures.rejected > 0.1 * figures.calls, figures  # retried blindly, honouring Retry-After


async def test_a_matching_limit_applies_without_the_step_naming_it(settings: Settings, peer: LlmPeer) -> None:
    write_limits(settings.workflows_dir, f"""
        limits:
          by-model: {{requests: {RATE}/s, match: {{provider: openai, model: peer-*}}}}
          other: {{requests: 1/min, match: {{provider: anthropic}}}}
        """)
    names = load_workflows(settings.workflows_dir, peer.openai_url, limit=None)
    async with client_for(settings) as client:
        async with fleet(settings, 2):
            figures = await run_load(client, peer, names, llm_runs=40, agent_runs=10)
        report = {lim.name: lim for lim in (await client.limits()).limits}
    assert figures.completed == 50 and figures.rejected <= 0.01 * figures.calls, figures
    assert report["by-model"].granted == 60 and not report["other"].granted


