"""The `llm` executor against a real HTTP peer speaking the OpenAI and Anthropic wire formats."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.llm_peer import LlmPeer, Reply, anthropic_text, openai_text, step_context
from worker.config import Settings
from worker.errors import StepFailed
from worker.steps.llm import LlmExecutor

SETTINGS = Settings(http_allowed_hosts=("127.0.0.1",))


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


@pytest.fixture
async def llm(tmp_path: Any) -> Any:
    # the operator lets workflows read these variables and send such keys to the local peer
    ex = LlmExecutor(Settings(http_allowed_hosts=("127.0.0.1",), workflows_dir=tmp_path,
                              step_env_allow=("TEST_OPENAI_KEY", "NO_SUCH_VAR_X", "TEST_MODEL_URL"),
                              step_env_hosts=("127.0.0.1",)))
    yield ex
    await ex.aclose()


async def test_openai_prompt_with_expressions_usage_and_idempotency_key(peer: LlmPeer, llm: LlmExecutor,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test")
    peer.script([openai_text("Paris", model="gpt-x-2026", usage=(11, 2))])
    out = await llm.execute({"model": "gpt-x", "base_url": peer.openai_url, "api_key_env": "TEST_OPENAI_KEY",
                             "system": "Be brief.", "prompt": "Capital of France?", "temperature": 0,
                             "max_tokens": 20, "stop": "\n", "pricing": {"gpt-x": {"input": 1.0, "output": 2.0}}},
                            step_context())
    assert out["text"] == "Paris" and out["finish_reason"] == "stop" and out["model"] == "gpt-x-2026"
    assert out["usage"] == {"input_tokens": 11, "output_tokens": 2, "total_tokens": 13}
    assert out["cost_usd"] == pytest.approx(11e-6 + 4e-6)
    (req,) = peer.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.key == "agentrt:run-1:s"
    assert req.body["metadata"] == {"idempotency_key": "agentrt:run-1:s"}
    assert req.body["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Capital of France?"}]
    assert req.body["temperature"] == 0 and req.body["max_tokens"] == 20 and req.body["stop"] == ["\n"]


async def test_anthropic_messages_api(peer: LlmPeer, llm: LlmExecutor) -> None:
    peer.script([anthropic_text("Bonjour", usage=(7, 3))])
    out = await llm.execute({"provider": "anthropic", "model": "claude-x", "base_url": peer.url,
                             "credential": "anthropic", "system": "French only.",
                             "messages": [{"role": "user", "content": "Hello"}]},
                            step_context(secrets={"anthropic": {"api_key": "sk-ant"}}))
    assert out["text"] == "Bonjour" and out["finish_reason"] == "end_turn" and out["provider"] == "anthropic"
    assert out["usage"]["total_tokens"] == 10
    (req,) = peer.requests
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant" and req.headers["anthropic-version"] == "2023-06-01"
    assert req.key == "agentrt:run-1:s"
    assert req.body["system"] == "French only." and req.body["max_tokens"] == 1024
    assert req.body["messages"] == [{"role": "user", "content": "Hello"}]
    assert "metadata" not in req.body


async def test_429_is_retryable_with_retry_after(peer: LlmPeer, llm: LlmExecutor) -> None:
    peer.script([Reply(429, {"Retry-After": "7"}, {"error": {"message": "rate limited"}})])
    with pytest.raises(StepFailed) as info:
        await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x"}, step_context())
    assert info.value.retryable and info.value.retry_after == 7.0 and "429" in info.value.reason


async def test_5xx_retryable_4xx_final(peer: LlmPeer, llm: LlmExecutor) -> None:
    peer.script([Reply(503, {}, "overloaded"), Reply(400, {}, {"error": "bad model"})])
    args = {"model": "m", "base_url": peer.openai_url, "prompt": "x", "api_key_env": "NO_SUCH_VAR_X"}
    with pytest.raises(StepFailed) as first:
        await llm.execute(args, step_context())
    with pytest.raises(StepFailed) as second:
        await llm.execute(args, step_context())
    assert first.value.retryable and not second.value.retryable and "bad model" in second.value.reason


async def test_malformed_json_is_retryable(peer: LlmPeer, llm: LlmExecutor) -> None:
    peer.script([Reply(200, {}, "{not json"), Reply(200, {}, {"choices": []})])
    for _ in range(2):
        with pytest.raises(StepFailed) as info:
            await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x"}, step_context())
        assert info.value.retryable


async def test_structured_output_validated(peer: LlmPeer, llm: LlmExecutor) -> None:
    schema = {"type": "object", "properties": {"priority": {"enum": ["low", "high"]}}, "required": ["priority"]}
    peer.script([openai_text('{"priority": "urgent"}'), openai_text('```json\n{"priority": "high"}\n```')])
    args = {"model": "m", "base_url": peer.openai_url, "prompt": "classify", "schema": schema}
    with pytest.raises(StepFailed) as info:
        await llm.execute(args, step_context())
    assert info.value.retryable and "does not match the schema" in info.value.reason and "priority" in info.value.reason
    out = await llm.execute(args, step_context())
    assert out["json"] == {"priority": "high"}
    assert peer.requests[0].body["response_format"]["json_schema"]["schema"] == schema


async def test_timeout_per_request(peer: LlmPeer, llm: LlmExecutor) -> None:
    peer.script([Reply(200, {}, openai_text("late"), delay=1.0)])
    with pytest.raises(StepFailed) as info:
        await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x", "timeout": "200ms"},
                          step_context())
    assert info.value.retryable and "timed out" in info.value.reason


async def test_loopback_refused_unless_allowed(peer: LlmPeer, tmp_path: Any) -> None:
    ex = LlmExecutor(Settings(workflows_dir=tmp_path))
    try:
        with pytest.raises(StepFailed) as info:
            await ex.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x"}, step_context())
    finally:
        await ex.aclose()
    assert not info.value.retryable and "AGENTRT_HTTP_ALLOWED_HOSTS" in info.value.reason
    assert peer.requests == []


async def test_base_url_from_environment(peer: LlmPeer, llm: LlmExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MODEL_URL", peer.openai_url)
    out = await llm.execute({"model": "m", "base_url_env": "TEST_MODEL_URL", "prompt": "x"}, step_context())
    assert out["text"] == "ok" and len(peer.requests) == 1


async def test_missing_credential_is_a_final_failure(peer: LlmPeer, llm: LlmExecutor) -> None:
    with pytest.raises(StepFailed) as info:
        await llm.execute({"model": "m", "base_url": peer.openai_url, "prompt": "x", "credential": "openai"},
                          step_context())
    assert not info.value.retryable and "openai" in info.value.reason
