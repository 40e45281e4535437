"""A real stdio MCP server (mcp SDK) whose one tool reports the environment it was started with.

    python env_server.py     # stdio; tool `environment` -> {"variables": {NAME: value, ...}}
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("env-test-server", log_level="WARNING")


@server.tool()
def environment() -> dict[str, dict[str, str]]:
    """Every environment variable of this process, with its value."""
    return {"variables": dict(os.environ)}


if __name__ == "__main__":
    server.run()
