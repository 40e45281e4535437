"""The `tool` step: call one tool on an MCP server (stdio or streamable HTTP), with the official SDK.

Servers are named in the workflow (`tools:`) or in the shared `tools.yaml` of the workflows
directory, or declared inline. The idempotency key travels in the request's `_meta`. A result with
`isError` is a (non-retryable) step failure carrying the tool's message; a server that dies or
hangs is a retryable failure, and the next call starts it again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from worker.config import Settings
from worker.definitions.loader import load_tools_file
from worker.definitions.schema import McpServerSpec, ModelPrice, ToolsFileSpec
from worker.definitions.step_args import ToolArgs
from worker.errors import DefinitionError, StepFailed
from worker.steps.base import StepContext
from worker.steps.http_wire import validate_args
from worker.steps.mcp_pool import McpPool, Resolved, resolve

logger = logging.getLogger(__name__)

DEFAULT_TOOL_TIMEOUT = 60.0
TOOLS_FILES = ("tools.yaml", "tools.yml")


class SharedTools:
    """The shared `tools.yaml` of the workflows directory, reloaded when the file changes."""

    def __init__(self, workflows_dir: Path) -> None:
        self.workflows_dir = workflows_dir
        self._stamp: tuple[str, int, int] | None = None
        self._spec = ToolsFileSpec()
        self._error: DefinitionError | None = None

    def spec(self) -> ToolsFileSpec:
        path = next((self.workflows_dir / n for n in TOOLS_FILES if (self.workflows_dir / n).is_file()), None)
        if path is None:
            self._stamp, self._spec, self._error = None, ToolsFileSpec(), None
            return self._spec
        info = os.stat(path)
        stamp = (str(path), info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._spec, self._error = load_tools_file(path), None
            except DefinitionError as exc:
                # keep the previous good version, as for workflow files
                logger.warning("invalid %s (keeping the previous version): %s", path.name, exc)
                self._error = exc
            self._stamp = stamp
        return self._spec

    def server(self, ref: str | McpServerSpec) -> McpServerSpec:
        """A name is looked up in tools.yaml (the operator's); a declaration (the workflow's) is itself."""
        if isinstance(ref, McpServerSpec):
            return ref
        found = self.spec().servers.get(ref)
        if found is None:
            hint = f" ({self._error})" if self._error else ""
            raise StepFailed(f"unknown tool server {ref!r}: declare it under tools: in the workflow or under "
                             f"servers: in {self.workflows_dir / 'tools.yaml'}{hint}", retryable=False)
        return found.model_copy(update={"name": ref})

    def pricing(self) -> dict[str, ModelPrice]:
        return dict(self.spec().pricing)


class ToolExecutor:
    """Runs `uses: tool` steps through a pool of MCP connections."""

    kind: ClassVar[str] = "tool"

    def __init__(self, settings: Settings, pool: McpPool | None = None, shared: SharedTools | None = None,
                 *, owns_pool: bool | None = None) -> None:
        self._settings = settings
        self._pool = pool or McpPool(settings)
        self._owns_pool = pool is None if owns_pool is None else owns_pool
        self.shared = shared or SharedTools(settings.workflows_dir)

    async def aclose(self) -> None:
        if self._owns_pool:
            await self._pool.aclose()

    def resolve(self, ref: str | McpServerSpec, ctx: StepContext) -> Resolved:
        # A name found only in tools.yaml is the operator's; a declaration came from the workflow file (its
        # `tools:`, copied into the step at load time, or inline) or from an expression: the workflow's.
        return resolve(self.shared.server(ref), ctx.secrets, self._settings.workflows_dir,
                       operator=isinstance(ref, str))

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        spec = validate_args(ToolArgs, args, "tool")
        server = self.resolve(spec.server, ctx)
        timeout = spec.timeout or server.spec.timeout or ctx.timeout or DEFAULT_TOOL_TIMEOUT
        result = await self._pool.call(server, spec.tool, spec.arguments, key=ctx.key_for(0), seconds=timeout,
                                       traceparent=ctx.traceparent)
        if result["isError"]:
            raise StepFailed(f"tool {server.name}/{spec.tool} returned an error: "
                             f"{result['text'] or result['content']}", retryable=False)
        return result
