"""The `tool` executor against real MCP servers (mcp SDK) over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.llm_peer import step_context
from tests.support.mcp_servers import HttpMcpServer, read_calls, stdio_declaration
from worker.config import Settings
from worker.errors import StepFailed
from worker.steps.tool import ToolExecutor


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    # the tests declare stdio servers inline, as a workflow would: the operator's opt-in allows them
    return Settings(http_allowed_hosts=("127.0.0.1",), workflows_dir=tmp_path, workflow_stdio_tools=True)


@pytest.fixture
async def tool(settings_: Settings) -> AsyncIterator[ToolExecutor]:
    ex = ToolExecutor(settings_)
    yield ex
    await ex.aclose()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpMcpServer]:
    server = HttpMcpServer(tmp_path / "http-calls.jsonl")
    yield server
    server.stop()


async def test_stdio_call_result_key_in_meta_and_process_reused(tool: ToolExecutor, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    server = stdio_declaration(log)
    out = await tool.execute({"server": server, "tool": "add", "arguments": {"a": 2, "b": 3}},
                             step_context(step_id="sum"))
    assert out["isError"] is False and '"sum": 5' in out["text"].replace("\n", "").replace("  ", " ")
    out2 = await tool.execute({"server": server, "tool": "echo", "arguments": {"text": "hi"}},
                              step_context(step_id="say"))
    assert out2["content"] == [{"type": "text", "text": "hi"}]
    calls = read_calls(log)
    assert [c["key"] for c in calls] == ["agentrt:run-1:sum", "agentrt:run-1:say"]
    assert calls[0]["pid"] == calls[1]["pid"]  # one server process, reused


async def test_is_error_is_a_final_failure_with_the_tools_message(tool: ToolExecutor, tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as info:
        await tool.execute({"server": stdio_declaration(tmp_path / "c.jsonl"), "tool": "fail",
                            "arguments": {"message": "ticket T-9 is locked"}}, step_context())
    assert not info.value.retryable and "ticket T-9 is locked" in info.value.reason


async def test_server_crash_mid_call_is_retryable_and_restarts(tool: ToolExecutor, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    server = stdio_declaration(log)
    await tool.execute({"server": server, "tool": "echo", "arguments": {"text": "before"}}, step_context())
    with pytest.raises(StepFailed) as info:
        await tool.execute({"server": server, "tool": "crash"}, step_context(step_id="boom"))
    assert info.value.retryable
    out = await tool.execute({"server": server, "tool": "echo", "arguments": {"text": "after"}}, step_context())
    assert out["text"] == "after"
    pids = [c["pid"] for c in read_calls(log)]
    assert pids[0] == pids[1] != pids[2]  # a fresh process after the crash


async def test_hang_past_timeout_is_retryable(tool: ToolExecutor, tmp_path: Path) -> None:
    server = stdio_declaration(tmp_path / "c.jsonl")
    with pytest.raises(StepFailed) as info:
        await tool.execute({"server": server, "tool": "sleep", "arguments": {"seconds": 30}, "timeout": "300ms"},
                           step_context())
    assert info.value.retryable and "300ms" not in info.value.reason and "0.3s" in info.value.reason
    out = await tool.execute({"server": server, "tool": "echo", "arguments": {"text": "still here"}},
                             step_context())
    assert out["text"] == "still here"


async def test_streamable_http_server(tool: ToolExecutor, http_server: HttpMcpServer, tmp_path: Path) -> None:
    out = await tool.execute({"server": {"name": "remote", "url": http_server.url, "headers": {"X-Test": "1"}},
                              "tool": "echo", "arguments": {"text": "over http"}}, step_context(step_id="h"))
    assert out["text"] == "over http"
    assert [c["key"] for c in read_calls(tmp_path / "http-calls.jsonl")] == ["agentrt:run-1:h"]


async def test_http_server_on_loopback_needs_allow_list(http_server: HttpMcpServer, tmp_path: Path) -> None:
    ex = ToolExecutor(Settings(workflows_dir=tmp_path))
    try:
        with pytest.raises(StepFailed) as info:
            await ex.execute({"server": {"url": http_server.url}, "tool": "echo", "arguments": {"text": "x"}},
                             step_context())
    finally:
        await ex.aclose()
    assert not info.value.retryable and "AGENTRT_HTTP_ALLOWED_HOSTS" in info.value.reason


async def test_named_server_from_tools_yaml_with_credential(tool: ToolExecutor, settings_: Settings,
                                                            tmp_path: Path) -> None:
    import sys

    from tests.support.mcp_servers import RECORDING_SERVER

    (settings_.workflows_dir / "tools.yaml").write_text(
        "servers:\n"
        "  rec:\n"
        f"    command: {sys.executable}\n"
        f"    args: [{RECORDING_SERVER}]\n"
        "    credential: rec_token\n"
        "    env: {MCP_TOKEN: '${credential.token}'}\n")
    out = await tool.execute({"server": "rec", "tool": "whoami"},
                             step_context(secrets={"rec_token": {"token": "s3cret"}}))
    assert '"token": "s3cret"' in out["text"] or out["structuredContent"]["token"] == "s3cret"
    with pytest.raises(StepFailed) as info:
        await tool.execute({"server": "nope", "tool": "whoami"}, step_context())
    assert not info.value.retryable and "unknown tool server 'nope'" in info.value.reason


async def test_server_that_died_while_idle_is_started_again(tool: ToolExecutor, tmp_path: Path) -> None:
    import json
    import os
    import signal

    server = stdio_declaration(tmp_path / "c.jsonl")
    first = json.loads((await tool.execute({"server": server, "tool": "whoami"}, step_context()))["text"])
    os.kill(first["pid"], signal.SIGKILL)
    for _ in range(200):  # the pool notices the end of the stream by itself, before any call
        if all(c.dead for c in tool._pool._connections.values()):
            break
        await asyncio.sleep(0.05)
    second = json.loads((await tool.execute({"server": server, "tool": "whoami"}, step_context()))["text"])
    assert second["pid"] != first["pid"]
