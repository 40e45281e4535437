"""What the live channel shows when an attempt dies mid-answer: a worker killed (kill -9) while the model
writes, and a provider that drops the connection. The partial text is marked abandoned, never spliced into
the retry's, and the retry streams the whole answer again under the next attempt number."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.streams.support import ANSWER, fold, live_entries, llm_workflow
from tests.support.llm_peer import LlmPeer, Reply, openai_text
from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from tests.support.services import WorkerProcs
from worker.config import Settings
from worker.streams.entries import LLM_ABANDONED, LLM_DELTA

RETRY = "retry: {max_attempts: 3, initial_interval: 100ms}"


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


async def test_a_worker_killed_mid_stream_leaves_an_abandoned_partial_and_a_clean_retry(
        settings: Settings, peer: LlmPeer, worker_procs: WorkerProcs) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow(retry=RETRY))
    peer.tokens_per_s = 15  # ~3 s of answer: the worker dies in the middle of it
    peer.script([openai_text(ANSWER, usage=(30, 44)), openai_text(ANSWER, usage=(30, 44))])
    first = worker_procs.start(name="doomed")
    async with client_for(settings) as client:
        run_id = await client.start_run("ask", {"llm": peer.openai_url})

        async def writing() -> bool:
            return sum(e.type == LLM_DELTA for e in live_entries(settings, run_id)) >= 4

        await eventually(writing, 30, 0.05, what="the first attempt writing")
        first.kill()
        partial = fold(live_entries(settings, run_id)).current("ask")
        peer.tokens_per_s = 400
        worker_procs.start(name="heir")
        await wait_status(client, run_id, "completed", timeout=60)
        detail = await client.get_run(run_id)
    entries = live_entries(settings, run_id)
    calls = fold(entries).of_step("ask")
    assert [(c.attempt, c.abandoned, c.done) for c in calls] == [(1, True, False), (2, False, True)]
    dead, retry = calls
    assert partial is not None and dead.text == partial.text and 0 < len(dead.text) < len(ANSWER)
    assert ANSWER.startswith(dead.text) and dead.reason == "attempt 2 started"
    assert retry.text == detail.output["text"] == ANSWER  # whole, nothing of attempt 1 in it
    marker = next(i for i, e in enumerate(entries) if e.type == LLM_ABANDONED)
    first_of_retry = next(i for i, e in enumerate(entries) if e.attempt == 2)
    assert entries[marker].data["superseded_by"] == 2 and marker < first_of_retry
    assert len({r.key for r in peer.requests}) == 1 and len(peer.requests) == 2  # the same idempotency key


async def test_a_provider_that_drops_the_stream_fails_the_attempt_retryably(settings: Settings,
                                                                           peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow(retry=RETRY))
    answer = openai_text(ANSWER, usage=(30, 44))
    peer.tokens_per_s = 400
    peer.script([Reply(200, {}, answer, drop_after=6), answer])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("ask", {"llm": peer.openai_url})
        await wait_status(client, run_id, "completed")
        detail = await client.get_run(run_id)
    failed = [e for e in detail.events if e.type == "step.failed"]
    assert len(failed) == 1 and failed[0].data["retryable"] and "broke off" in failed[0].data["error"]
    assert detail.output["text"] == ANSWER
    calls = fold(live_entries(settings, run_id)).of_step("ask")
    assert [(c.attempt, c.abandoned, c.done) for c in calls] == [(1, True, False), (2, False, True)]
    assert "broke off" in (calls[0].reason or "") and ANSWER.startswith(calls[0].text) and calls[0].text
    assert calls[1].text == ANSWER


async def test_a_run_cancelled_mid_stream_marks_its_call_abandoned(settings: Settings, peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    peer.tokens_per_s = 10
    peer.script([openai_text(ANSWER)])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("ask", {"llm": peer.openai_url})
        await eventually(lambda: _writing(settings, run_id), 20, 0.05, what="the answer being written")
        await client.cancel(run_id, reason="enough")
        await wait_status(client, run_id, "cancelled")
        await asyncio.sleep(0.3)
    call = fold(live_entries(settings, run_id)).current("ask")
    assert call is not None and call.abandoned and not call.done and "interrupted" in (call.reason or "")


async def _writing(settings: Settings, run_id: str) -> bool:
    return any(e.type == LLM_DELTA for e in live_entries(settings, run_id))
