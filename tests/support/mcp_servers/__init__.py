"""Real MCP servers (built with the mcp SDK) that tests launch over stdio or streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RECORDING_SERVER = Path(__file__).with_name("recording_server.py")


def stdio_declaration(call_log: Path, **extra: Any) -> dict[str, Any]:
    """An inline `server:` declaration launching the recording server over stdio."""
    env = {"MCP_CALL_LOG": str(call_log), **extra.pop("env", {})}
    return {"name": "rec", "command": sys.executable, "args": [str(RECORDING_SERVER)], "env": env, **extra}


def read_calls(call_log: Path) -> list[dict[str, Any]]:
    if not call_log.exists():
        return []
    return [json.loads(line) for line in call_log.read_text().splitlines() if line.strip()]


class HttpMcpServer:
    """The recording server over streamable HTTP, in a subprocess on a free port."""

    def __init__(self, call_log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        env = {**os.environ, "MCP_CALL_LOG": str(call_log)}
        self.proc = subprocess.Popen([sys.executable, str(RECORDING_SERVER), "--http", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the MCP HTTP server exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("the MCP HTTP server did not start listening within 20s")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
