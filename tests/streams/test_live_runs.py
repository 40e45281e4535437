"""Live output of `llm` and `agent` steps run by a real worker: followed (and resumed) with the client API and
`agentrt tail`, the same committed outputs with and without streaming, and the figures on the spans."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.streams.support import ANSWER, fold, live_entries, llm_workflow
from tests.support.llm_peer import LlmPeer, anthropic_text, openai_text
from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings
from worker.store.spans import load_spans
from worker.streams.entries import LLM_DELTA, LLM_DONE
from worker.streams.fold import LiveText


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_run_commits_the_same_output_with_and_without_streaming(settings: Settings, peer: LlmPeer,
                                                                        provider: str) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow(provider=provider))
    write_workflow(settings, "ask-plain.yaml", llm_workflow("ask-plain", provider=provider, extra="stream: false"))
    answer = anthropic_text(ANSWER, usage=(30, 44)) if provider == "anthropic" else openai_text(ANSWER, usage=(30, 44))
    peer.script([answer, answer])
    peer.tokens_per_s = 400
    url = peer.url if provider == "anthropic" else peer.openai_url
    async with running_worker(settings), client_for(settings) as client:
        streamed = await client.start_run("ask", {"llm": url})
        await wait_status(client, streamed, "completed")
        plain = await client.start_run("ask-plain", {"llm": url})
        await wait_status(client, plain, "completed")
        one, other = await client.get_run(streamed), await client.get_run(plain)
    assert one.output == other.output and one.output["text"] == ANSWER and one.output["cost_usd"] > 0
    assert [r.body.get("stream") for r in peer.requests] == [True, None]
    assert fold(live_entries(settings, streamed)).current("ask").text == ANSWER  # type: ignore[union-attr]
    assert live_entries(settings, plain) == []  # stream: false: nothing on the live channel


async def test_a_follower_that_disconnects_and_resumes_sees_every_character_once(settings: Settings,
                                                                               peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    peer.tokens_per_s = 60  # ~0.7 s of answer: the follower joins, leaves and comes back while it streams
    peer.script([openai_text(ANSWER, usage=(30, 44))])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("ask", {"llm": peer.openai_url})
        seen: list[str] = []
        texts: list[str] = []
        async for entry in client.follow_live(run_id):
            seen.append(entry.id)
            texts.append(entry.text or "")
            if entry.type == LLM_DELTA and len(texts) >= 3:
                break  # the consumer goes away mid-answer
        await asyncio.sleep(0.2)  # more is written meanwhile
        async with client_for(settings) as again:  # another process, say: only the cursor is carried over
            async for entry in again.follow_live(run_id, after=seen[-1]):
                seen.append(entry.id)
                texts.append(entry.text or "")
        detail = await client.get_run(run_id)
    assert detail.summary.status.value == "completed"
    assert len(seen) == len(set(seen)) and seen == sorted(seen, key=lambda i: tuple(map(int, i.split("-"))))
    assert "".join(texts) == detail.output["text"] == ANSWER


async def test_agentrt_tail_prints_the_text_as_it_comes_then_stops(settings: Settings, peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    peer.tokens_per_s = 25  # ~1.6 s of answer: longer than `agentrt` takes to start
    peer.script([openai_text(ANSWER, usage=(30, 44)), openai_text(ANSWER, usage=(30, 44))])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("ask", {"llm": peer.openai_url})
        await eventually(lambda: _streaming(settings, run_id), 20, 0.02, what="the first delta")
        code, out, err = await agentrt(settings, "tail", run_id[:8], "--step", "ask")  # joins mid-answer
        json_code, lines, _ = await agentrt(settings, "tail", run_id, "--json")
        assert (await client.get_run(run_id)).summary.status.value == "completed"
    assert code == 0 and out == ANSWER + "\n", (out, err)
    assert "[ask attempt 1]" in err and "ask attempt 1 done: 44 tokens" in err
    entries = [json.loads(line) for line in lines.splitlines()]
    assert json_code == 0 and entries[-1]["type"] == LLM_DONE
    assert "".join(e["text"] or "" for e in entries if e["type"] == LLM_DELTA) == ANSWER
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert all(e["run_id"] == run_id and e["step_id"] == "ask" and e["attempt"] == 1 for e in entries)


async def _streaming(settings: Settings, run_id: str) -> bool:
    return any(e.type == LLM_DELTA for e in live_entries(settings, run_id))


async def test_the_attempt_and_the_call_spans_carry_time_to_first_token_and_rate(settings: Settings,
                                                                                 peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    peer.tokens_per_s = 200
    peer.script([openai_text(ANSWER, usage=(30, 44))])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("ask", {"llm": peer.openai_url})
        await wait_status(client, run_id, "completed")
        spans: list[dict[str, Any]] = []

        async def stored() -> bool:
            spans[:] = await load_spans(client.pool, run_id)
            return {"chat m", "ask attempt 1", "step ask"} <= {s["name"] for s in spans}

        await eventually(stored, 15, what="the spans in the span store")
    by_name = {s["name"]: s["attributes"] for s in spans}
    chat, attempt, step = by_name["chat m"], by_name["ask attempt 1"], by_name["step ask"]
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "openai"
    assert chat["gen_ai.usage.output_tokens"] == 44 and chat["gen_ai.response.finish_reasons"] == ["stop"]
    assert chat["agentrt.llm.streamed"] is True and 0 < chat["gen_ai.response.time_to_first_chunk"] < 5
    assert chat["agentrt.llm.output_tokens_per_s"] > 20  # 44 tokens written in ~0.2 s
    for attrs in (attempt, step):
        assert attrs["agentrt.llm.ttft_ms"] == chat["agentrt.llm.ttft_ms"]
        assert attrs["agentrt.llm.output_tokens_per_s"] == chat["agentrt.llm.output_tokens_per_s"]
        assert attrs["agentrt.llm.streamed_calls"] == 1


async def test_live_text_of_an_agent_names_each_turn(settings: Settings, peer: LlmPeer) -> None:
    """An agent without tools whose first answer fails its schema: two turns, each its own call on the stream."""
    write_workflow(settings, "agent.yaml", """
        name: agent
        inputs: {llm: {type: string}}
        steps:
          - id: think
            uses: agent
            with:
              model: m
              base_url: "${{ inputs.llm }}"
              prompt: Answer in JSON.
              schema: {type: object, required: [ok]}
        """)
    peer.script([openai_text("not json at all"), openai_text('{"ok": true}')])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("agent", {"llm": peer.openai_url})
        await wait_status(client, run_id, "completed")
        text = LiveText()
        for entry in await client.live_entries(run_id):
            text.feed(entry)
    assert [(c.turn, c.text, c.done) for c in text.of_step("think")] == [(0, "not json at all", True),
                                                                        (1, '{"ok": true}', True)]
