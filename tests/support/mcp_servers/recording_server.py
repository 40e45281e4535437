"""A real MCP server (mcp SDK) for tests: records every tool call, with its idempotency key, to a file.

    python recording_server.py                 # stdio
    python recording_server.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp

`MCP_CALL_LOG` names a JSON-lines file; each call appends {"tool", "arguments", "key", "pid"} when it
starts (so a call that crashes or hangs is recorded too). `MCP_REQUIRE_TOKEN` makes every tool
check that the environment carried that token (stdio credentials).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("recording-test-server", log_level="WARNING")


def _record(tool: str, arguments: dict[str, Any], ctx: Context) -> None:
    meta = ctx.request_context.meta
    data = meta.model_dump() if hasattr(meta, "model_dump") else dict(meta or {})
    path = os.environ.get("MCP_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments, "key": data.get("idempotency_key"),
                                "pid": os.getpid()}) + "\n")


@server.tool()
def echo(text: str, ctx: Context) -> str:
    """Return the text unchanged."""
    _record("echo", {"text": text}, ctx)
    return text


@server.tool()
def add(a: int, b: int, ctx: Context) -> dict[str, int]:
    """Add two integers."""
    _record("add", {"a": a, "b": b}, ctx)
    return {"sum": a + b}


@server.tool()
def refund(ticket: str, amount: float, ctx: Context) -> str:
    """Refund a ticket (an effect: counted by idempotency key)."""
    _record("refund", {"ticket": ticket, "amount": amount}, ctx)
    return f"refunded {amount:g} on {ticket}"


@server.tool()
def fail(message: str, ctx: Context) -> str:
    """Always fails with the given message (isError)."""
    _record("fail", {"message": message}, ctx)
    raise ToolError(message)


@server.tool()
def crash(ctx: Context) -> str:
    """The server process dies in the middle of the call."""
    _record("crash", {}, ctx)
    os._exit(3)


@server.tool()
async def sleep(seconds: float, ctx: Context) -> str:
    """Answer after `seconds`."""
    _record("sleep", {"seconds": seconds}, ctx)
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
def whoami(ctx: Context) -> dict[str, Any]:
    """The pid and the token this server was started with."""
    _record("whoami", {}, ctx)
    return {"pid": os.getpid(), "token": os.environ.get("MCP_TOKEN")}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
