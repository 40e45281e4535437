"""Streaming calls of the `llm` and `agent` executors against the wire peers: the same results as plain calls,
the deltas on a real Redis in order, fallback to the plain call, and failures mid-stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.streams.support import ANSWER, fold, live_entries, uuid_context
from tests.support.llm_peer import (
    LlmPeer,
    MemoryJournal,
    Reply,
    anthropic_text,
    anthropic_tool_use,
    openai_text,
    openai_tool_calls,
    step_context,
)
from tests.support.mcp_servers import stdio_declaration
from worker.config import Settings
from worker.errors import StepFailed
from worker.steps.agent import AgentExecutor
from worker.steps.llm import LlmClient, LlmExecutor
from worker.streams.entries import LLM_ABANDONED, LLM_DELTA, LLM_DONE
from worker.streams.publisher import LivePublisher

PRICING = {"m": {"input": 1.5, "output": 6.0}, "peer-model": {"input": 1.0, "output": 2.0}}


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


@pytest.fixture
async def llm(settings: Settings) -> AsyncIterator[LlmExecutor]:
    """An llm executor as a worker builds it: its client publishes deltas to the test's Redis."""
    ex = LlmExecutor(settings, LlmClient(settings, LivePublisher(settings)), owns_client=True)
    yield ex
    await ex.aclose()


def _answers(provider: str) -> list[dict[str, Any]]:
    if provider == "anthropic":
        return [anthropic_text(ANSWER, usage=(31, 47)),
                anthropic_tool_use([("lookup", {"ticket": "T-1", "fields": ["amount", "paid_at"]}),
                                    ("notify", {"text": "refund approved, 40 EUR"})], usage=(40, 22))]
    return [openai_text(ANSWER, model="peer-model", usage=(31, 47)),
            openai_tool_calls([("lookup", {"ticket": "T-1", "fields": ["amount", "paid_at"]}),
                               ("notify", {"text": "refund approved, 40 EUR"})], model="peer-model", usage=(40, 22))]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_streamed_call_gives_exactly_the_plain_calls_output(peer: LlmPeer, llm: LlmExecutor,
                                                                    provider: str) -> None:
    base = peer.url if provider == "anthropic" else peer.openai_url
    peer.tokens_per_s = 2000
    for answer in _answers(provider):
        peer.script([answer, answer])
        args = {"provider": provider, "model": "m", "base_url": base, "prompt": "refund?", "pricing": PRICING}
        ctx = uuid_context()  # one run: the same idempotency key for both calls
        streamed = await llm.execute(args, ctx)
        plain = await llm.execute({**args, "stream": False}, ctx)
        assert streamed == plain
    assert streamed["tool_calls"][0]["arguments"] == {"ticket": "T-1", "fields": ["amount", "paid_at"]}
    bodies = [r.body for r in peer.requests]
    assert [b.get("stream") for b in bodies] == [True, None, True, None]
    if provider == "openai":
        assert bodies[0]["stream_options"] == {"include_usage": True}
    # the same request apart from asking for a stream, with the same idempotency key
    assert {k: v for k, v in bodies[0].items() if k not in ("stream", "stream_options")} == bodies[1]
    assert peer.requests[0].key == peer.requests[1].key


async def test_an_agent_streams_every_turn_and_answers_as_without_streaming(peer: LlmPeer, settings: Settings,
                                                                          tmp_path: Path) -> None:
    from dataclasses import replace

    s = replace(settings, workflow_stdio_tools=True)
    agent = AgentExecutor(s, LlmClient(s, LivePublisher(s)))
    try:
        log = tmp_path / "calls.jsonl"
        turns = [openai_tool_calls([("add", {"a": 40, "b": 2})]), openai_text(ANSWER, usage=(50, 30))]
        args = {"model": "m", "base_url": peer.openai_url, "prompt": "Add 40 and 2.",
                "servers": [stdio_declaration(log)], "pricing": PRICING}
        peer.script(turns)
        ctx = uuid_context(journal=MemoryJournal())
        streamed = await agent.execute(args, ctx)
        peer.script(turns)
        plain = await agent.execute({**args, "stream": False}, uuid_context(journal=MemoryJournal()))
    finally:
        await agent.aclose()
    assert streamed == plain and streamed["answer"] == ANSWER
    text = fold(live_entries(settings, str(ctx.run_id)))
    calls = text.of_step("s")
    assert [(c.attempt, c.turn, c.done) for c in calls] == [(1, 0, True), (1, 1, True)]
    assert calls[0].tools == {0: {"id": "call_0", "name": "add", "arguments": '{"a": 40, "b": 2}'}}
    assert calls[1].text == ANSWER and calls[1].finish_reason == "stop" and calls[1].output_tokens == 30


async def test_deltas_reach_redis_in_order_coalesced_with_their_figures(peer: LlmPeer, llm: LlmExecutor,
                                                                      settings: Settings) -> None:
    peer.tokens_per_s = 200  # ~36 pieces over ~0.2 s: a first entry at once, then one every ~50 ms
    peer.script([openai_text(ANSWER, usage=(31, 47))])
    ctx = uuid_context()
    out = await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "refund?"}, ctx)
    entries = live_entries(settings, str(ctx.run_id))
    deltas = [e for e in entries if e.type == LLM_DELTA]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[-1].type == LLM_DONE and entries[-1].data["output_tokens"] == 47
    assert "".join(e.text or "" for e in deltas) == out["text"] == ANSWER
    assert {(e.step_id, e.item, e.attempt, e.turn) for e in entries} == {("s", None, 1, 0)}
    pieces = len(ANSWER.split())
    assert 3 <= len(deltas) < pieces / 2, (len(deltas), pieces)  # coalesced, but not all in one
    first = deltas[0]
    assert len(first.text or "") <= 8 and first.data["ttft_ms"] > 0  # the first piece alone, at once
    assert 0 < entries[-1].data["output_tokens_per_s"] < 2000


async def test_a_peer_that_answers_plain_json_to_a_stream_request_still_works(peer: LlmPeer, llm: LlmExecutor,
                                                                             settings: Settings) -> None:
    peer.streaming = False
    peer.script([openai_text(ANSWER, usage=(3, 4))])
    ctx = uuid_context()
    out = await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x"}, ctx)
    assert out["text"] == ANSWER and out["usage"]["total_tokens"] == 7
    assert len(peer.requests) == 1 and peer.requests[0].body["stream"] is True
    calls = fold(live_entries(settings, str(ctx.run_id))).of_step("s")
    assert len(calls) == 1 and calls[0].text == ANSWER and calls[0].done  # in one piece, at the end


async def test_a_peer_that_refuses_to_stream_gets_the_plain_call_and_keeps_getting_it(peer: LlmPeer,
                                                                                     llm: LlmExecutor) -> None:
    peer.refuse_stream = True
    peer.script([openai_text("one"), openai_text("two")])
    args = {"model": "m", "base_url": peer.openai_url, "prompt": "x"}
    first = await llm.execute(args, step_context())
    second = await llm.execute(args, step_context())
    assert (first["text"], second["text"]) == ("one", "two")
    assert [r.body.get("stream") for r in peer.requests] == [True, None, None]  # refused once, then plain
    assert len({r.key for r in peer.requests}) == 1  # the plain call carries the same idempotency key


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_connection_dropped_mid_stream_is_a_retryable_failure(peer: LlmPeer, llm: LlmExecutor,
                                                                     settings: Settings, provider: str) -> None:
    base = peer.url if provider == "anthropic" else peer.openai_url
    answer = _answers(provider)[0]
    peer.script([Reply(200, {}, answer, drop_after=5), answer])
    ctx = uuid_context()
    args = {"provider": provider, "model": "m", "base_url": base, "prompt": "x"}
    with pytest.raises(StepFailed) as info:
        await llm.execute(args, ctx)
    assert info.value.retryable and "broke off" in info.value.reason, info.value.reason
    out = await llm.execute(args, uuid_context())
    assert out["text"] == ANSWER
    entries = live_entries(settings, str(ctx.run_id))
    assert entries[-1].type == LLM_ABANDONED and "broke off" in entries[-1].data["reason"]
    call = fold(entries).of_step("s")[0]
    assert call.abandoned and not call.done and ANSWER.startswith(call.text) and 0 < len(call.text) < len(ANSWER)


async def test_an_error_event_or_an_unfinished_stream_is_a_retryable_failure(peer: LlmPeer,
                                                                             llm: LlmExecutor) -> None:
    overloaded = ('event: message_start\ndata: {"type": "message_start", "message": {"model": "c", "usage": '
                  '{"input_tokens": 1}}}\n\nevent: error\ndata: {"type": "error", "error": {"type": '
                  '"overloaded_error", "message": "Overloaded"}}\n\n')
    unfinished = 'data: {"choices": [{"index": 0, "delta": {"content": "half an ans"}}]}\n\n'
    peer.script([Reply(200, {"Content-Type": "text/event-stream"}, overloaded, stream=False),
                 Reply(200, {"Content-Type": "text/event-stream"}, unfinished, stream=False)])
    with pytest.raises(StepFailed) as error_event:
        await llm.execute({"provider": "anthropic", "model": "m", "base_url": peer.url, "prompt": "x"},
                          step_context())
    with pytest.raises(StepFailed) as cut_short:
        await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x"}, step_context())
    assert error_event.value.retryable and "overloaded_error: Overloaded" in error_event.value.reason
    assert cut_short.value.retryable and "ended before the answer did" in cut_short.value.reason


async def test_secrets_the_model_echoes_are_redacted_on_the_live_channel(peer: LlmPeer, llm: LlmExecutor,
                                                                       settings: Settings) -> None:
    secret = "tok-9f8e7d6c5b4a"
    peer.tokens_per_s = 500
    # the pieces are words of at most 6 characters: the value arrives split over three of them
    peer.script([openai_text(f"Your token is {secret} and {json.dumps(secret)} again.")])
    ctx = uuid_context(secrets={"crm": {"token": secret}})
    out = await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x"}, ctx)
    entries = live_entries(settings, str(ctx.run_id))
    live = "".join(e.text or "" for e in entries)
    assert secret in out["text"]  # the engine redacts the committed output; here only the live channel is checked
    assert secret not in live and secret[:6] not in live
    assert live == "Your token is [redacted:crm.token] and \"[redacted:crm.token]\" again."
