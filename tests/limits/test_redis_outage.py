"""Losing Redis does not turn the limits off: each worker falls back to its own share of every limit (and says so
in `agentrt limits`), no run is lost, and when Redis is back (empty) the fleet shares the buckets again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.limits.support import load_workflows, sized_answer, write_limits
from tests.support.llm_peer import LlmPeer
from tests.support.runtime import client_for, eventually, running_worker
from tests.support.services import OwnServices
from worker.config import Settings

RATE = 20


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        p.responder = sized_answer
        p.limit(requests=RATE, per=1.0)
        yield p


async def test_redis_restarted_mid_load_fallback_then_recovery(settings: Settings, own_services: OwnServices,
                                                               peer: LlmPeer) -> None:
    redis = own_services.redis()
    settings = replace(settings, redis_url=redis.url())
    write_limits(settings.workflows_dir, f"limits:\n  peer: {{requests: {RATE}/s}}\n")
    ask, _ = load_workflows(settings.workflows_dir, peer.openai_url, limit="peer")
    async with contextlib.AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(running_worker(settings, worker_id=f"outage-w{i}"))
                   for i in range(2)]
        client = await stack.enter_async_context(client_for(settings))
        runs = await client.start_runs(ask, [{"n": i} for i in range(120)])
        await asyncio.to_thread(peer.wait_for, lambda p: len(p.accepted) >= 20, 20)
        restart = asyncio.create_task(asyncio.to_thread(redis.restart, 3.0))  # down 3 s, back empty
        modes: set[str] = set()
        seen_in_postgres: set[str] = set()
        while not restart.done():
            modes |= {w.limiter.mode for w in workers if w.limiter is not None}
            seen_in_postgres |= {w.mode or "" for w in (await client.limits()).workers}
            await asyncio.sleep(0.2)
        await restart
        during = len(peer.accepted)
        assert "fallback" in modes and "fallback" in seen_in_postgres
        for run_id in runs:
            summary = await client.wait_for_run(run_id, timeout=60)
            assert summary.status.value == "completed", summary.error

        async def back() -> bool:
            report = await client.limits()
            return report.mode == "redis" and all(w.limiter is not None and w.limiter.mode == "redis"
                                                  for w in workers)

        await eventually(back, 10, what="both workers back on Redis")
        report = await client.limits()
    assert len(peer.accepted) == 120 and during < 120
    # the fallback share kept the pace under the peer's limit: at most a handful of 429s, all waited through
    assert len(peer.rejections) <= 0.02 * 120, len(peer.rejections)
    (limit,) = report.limits
    assert limit.granted is not None and 0 < limit.granted <= 120  # counted again since Redis came back
