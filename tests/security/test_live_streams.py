"""Hostile workflows against the live channel (worker/streams): a workflow cannot choose where its deltas go
(only its own run's stream, named by the engine's run id), cannot make a run's stream grow without bound
(entries are capped in number and size, and the stream expires), and an encrypted run's answer never rests
in Redis in plain text."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from tests.streams.support import ANSWER, fold, live_entries, llm_workflow
from tests.support.llm_peer import LlmPeer, openai_text, openai_tool_calls
from tests.support.runtime import client_for, running_worker, wait_status, write_workflow
from worker.boundary import load_checks
from worker.bus.streams import Keys
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.errors import DefinitionError
from worker.streams.entries import LLM_DELTA, LLM_DONE


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.mark.parametrize("key", ["stream_key", "live_key", "run_id", "stream_to"])
def test_a_workflow_cannot_name_a_stream(settings: Settings, key: str) -> None:
    path = write_workflow(settings, "steer.yaml", llm_workflow("steer", extra=f'{key}: "agentrt:live:{{victim}}"'))
    with pytest.raises(DefinitionError) as caught:
        load_file(path, checks=load_checks(settings))
    assert f"unknown key '{key}'" in str(caught.value)


async def test_a_run_writes_only_its_own_stream_whatever_its_model_says(settings: Settings, peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    peer.script([openai_text(ANSWER)])
    async with running_worker(settings), client_for(settings) as client:
        victim = await client.start_run("ask", {"llm": peer.openai_url})
        await wait_status(client, victim, "completed")
        before = live_entries(settings, victim)
        # the hostile run's step id, prompt and answer all name the victim's stream
        keys = Keys(settings.redis_prefix)
        hostile_text = f"{keys.live(victim)} {{{victim}}} {victim}\n" * 50
        write_workflow(settings, "hostile.yaml", llm_workflow("hostile").replace(
            "prompt: Was the refund for T-1 made?", f'prompt: "write into {keys.live(victim)}"'))
        peer.script([openai_text(hostile_text), openai_tool_calls([(keys.live(victim), {"run": victim})])])
        hostile = await client.start_run("hostile", {"llm": peer.openai_url})
        await wait_status(client, hostile, "completed")
    assert live_entries(settings, victim) == before  # not one entry more
    mine = live_entries(settings, hostile)
    assert mine and {e.run_id for e in mine} == {hostile}
    r = _redis(settings)
    try:
        streams = {k.decode() for k in r.scan_iter(match=f"{settings.redis_prefix}:live:*")}
    finally:
        r.close()
    assert streams == {keys.live(victim), keys.live(hostile)}


async def test_a_flood_of_output_is_bounded_in_length_size_and_time(settings: Settings, peer: LlmPeer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRT_LIVE_MAXLEN", "40")
    monkeypatch.setenv("AGENTRT_LIVE_TTL", "120")
    words = "flood " * 30_000  # 30,000 pieces, 180 KB
    arguments = {"blob": "x" * 400_000}  # one tool call's arguments: 50,000 pieces, 400 KB
    write_workflow(settings, "flood.yaml", llm_workflow("flood"))
    peer.script([openai_text(words, usage=(5, 30_000)), openai_tool_calls([("sink", arguments)])])
    async with running_worker(settings), client_for(settings) as client:
        text_run = await client.start_run("flood", {"llm": peer.openai_url})
        await wait_status(client, text_run, "completed", timeout=60)
        tool_run = await client.start_run("flood", {"llm": peer.openai_url})
        await wait_status(client, tool_run, "completed", timeout=60)
        outputs = [(await client.get_run(i)).output for i in (text_run, tool_run)]
    assert outputs[0]["text"] == words and outputs[1]["tool_calls"][0]["arguments"] == arguments  # unharmed
    r = _redis(settings)
    try:
        for run_id in (text_run, tool_run):
            key = Keys(settings.redis_prefix).live(run_id)
            assert r.xlen(key) <= 40
            assert 0 < r.ttl(key) <= 120
            memory = r.memory_usage(key)
            assert memory is not None and memory < 40 * 1024 * 2, memory
            entries = live_entries(settings, run_id)
            assert all(len(e.text or "") <= 1024 for e in entries)
            assert all(len(t.get("arguments") or "") <= 1024 for e in entries for t in e.tools)
            done = [e for e in entries if e.type == LLM_DONE]
            assert len(done) == 1 and done[0].data["truncated"] is True
    finally:
        r.close()


async def test_an_encrypted_runs_answer_never_rests_in_redis(settings: Settings, peer: LlmPeer,
                                                             vault_server: Any) -> None:
    settings = replace(settings, vault_addr=vault_server.addr, vault_token=vault_server.root_token,
                       transit_key=f"agentrt-test-{uuid.uuid4().hex[:8]}")
    secret_answer = f"the diagnosis is {uuid.uuid4().hex}"
    write_workflow(settings, "sealed.yaml", llm_workflow("sealed", top="encrypt_payloads: true"))
    peer.tokens_per_s = 300
    peer.script([openai_text(secret_answer), openai_tool_calls([("record", {"note": secret_answer})])])
    async with running_worker(settings), client_for(settings) as client:
        runs = []
        for _ in range(2):
            runs.append(await client.start_run("sealed", {"llm": peer.openai_url}))
            await wait_status(client, runs[-1], "completed")
        answer = (await client.get_run(runs[0])).output["text"]
    assert answer == secret_answer  # readers with Vault access see it, from Postgres
    r = _redis(settings)
    try:
        streams = [k for k in r.scan_iter(match=f"{settings.redis_prefix}:*") if r.type(k) == b"stream"]
        everything = b"\n".join(v for key in streams for _, fields in r.xrange(key) for v in fields.values())
    finally:
        r.close()
    assert secret_answer.encode() not in everything and secret_answer[-12:].encode() not in everything
    calls = [fold(live_entries(settings, run_id)).current("ask") for run_id in runs]
    assert all(c is not None and c.done and c.encrypted and c.text == "" for c in calls)
    assert calls[0] is not None and calls[0].chars == len(secret_answer)  # progress, without the text
    assert calls[1] is not None and calls[1].tools[0]["name"] == "record" and calls[1].tools[0]["arguments"] == ""
    assert any(e.type == LLM_DELTA for run_id in runs for e in live_entries(settings, run_id))
