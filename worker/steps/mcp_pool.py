"""MCP client connections, pooled: one live connection per server declaration, restarted if it dies.

A connection lives in a task of its own (the SDK's transports are anyio context managers that must
be entered and left by the same task); calls from step tasks go through its session concurrently.
Stdio servers are launched once and reused, with a scrubbed environment (`worker.egress.toolservers`);
a streamable-HTTP endpoint is checked against the egress policy before the first connection, and its
redirects are not followed. Servers a workflow file declares (`Resolved.operator` false) go through the
egress host allow-list and may not be stdio commands unless the operator opted in; the operator's own
(`tools.yaml`) are exempt from both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from worker.config import Settings
from worker.definitions.schema import McpServerSpec
from worker.egress.policy import EgressPolicy
from worker.egress.toolservers import stdio_environment
from worker.errors import StepFailed
from worker.steps.providers import ToolSpec

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0
_PLACEHOLDER = re.compile(r"\$\{credential\.([A-Za-z0-9_.-]+)\}")
# the connection is gone: start a new one for the next call
_CONNECTION_ERRORS = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                      ConnectionError, BrokenPipeError, EOFError)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A declaration with credentials filled in, ready to connect; `key` identifies it in the pool."""

    name: str
    spec: McpServerSpec
    env: dict[str, str]
    headers: dict[str, str]
    cwd: str
    key: str
    operator: bool = False
    """Declared in the operator's tools.yaml (code), not in a workflow file (data)."""


def resolve(spec: McpServerSpec, secrets: Mapping[str, Mapping[str, Any]], workflows_dir: Path, *,
            operator: bool = False) -> Resolved:
    """Fill `${credential.KEY}` placeholders from the server's credential."""
    values: Mapping[str, Any] = {}
    name = spec.name or (spec.command or spec.url or "server")
    if spec.credential:
        found = secrets.get(spec.credential)
        if found is None:
            raise StepFailed(f"tool server {name!r}: credential {spec.credential!r} is not available to this "
                             "step (list it under the step's secrets:)", retryable=False)
        values = found

    def fill(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise StepFailed(f"tool server {name!r}: credential {spec.credential!r} has no "
                                 f"{match.group(1)!r}", retryable=False)
            return str(values[match.group(1)])
        return _PLACEHOLDER.sub(one, text)

    env = {k: fill(v) for k, v in spec.env.items()}
    headers = {k: fill(v) for k, v in spec.headers.items()}
    cwd = str((workflows_dir / spec.cwd) if spec.cwd else workflows_dir)
    material = json.dumps([spec.command, spec.args, env, cwd, spec.url, headers, operator], sort_keys=True)
    return Resolved(name, spec, env, headers, cwd, hashlib.sha256(material.encode()).hexdigest(), operator)


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """Streamable HTTP with the declared headers; the HTTP client is closed with the connection."""
    # trust_env=False: proxy variables and ~/.netrc never apply to user-chosen URLs; no redirects: the
    # headers (credentials) are for this endpoint only, and a redirect target was not checked
    http = httpx2.AsyncClient(headers=headers, trust_env=False, follow_redirects=False,
                              timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, streamable_http_client(url, http_client=http) as streams:
        yield streams


class _WatchedReceive:
    """The transport's receive stream, noticing its end: the server exited (or the HTTP stream closed)
    even while no call was in flight, so the next call starts a new connection instead of failing."""

    def __init__(self, inner: Any, on_end: Any) -> None:
        self._inner = inner
        self._on_end = on_end

    async def __aenter__(self) -> _WatchedReceive:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> Any:
        return await self._inner.__aexit__(*exc)

    def __aiter__(self) -> _WatchedReceive:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.EndOfStream):
            self._on_end()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.asynccontextmanager
async def _watched(transport: Any, on_end: Any) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield _WatchedReceive(read_stream, on_end), write_stream


class _Connection:
    def __init__(self, server: Resolved, settings: Settings) -> None:
        self.server = server
        self._settings = settings
        self.client: Client | None = None
        self.dead = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"mcp:{server.name}")

    def _target(self) -> Any:
        spec = self.server.spec
        if spec.url is not None:
            return _watched(_http_transport(spec.url, self.server.headers), self._ended)
        command = sys.executable if spec.command == "python" else spec.command
        assert command is not None
        params = StdioServerParameters(command=command, args=list(spec.args), env=stdio_environment(self.server.env),
                                       cwd=self.server.cwd)
        return _watched(stdio_client(params), self._ended)

    def _ended(self) -> None:
        if not self.dead and not self._stop.is_set():
            logger.info("MCP server %s: connection ended; the next call starts it again", self.server.name)
        self.dead = True

    async def _run(self) -> None:
        try:
            async with Client(self._target(), mode="legacy", cache=None) as client:
                self.client = client
                if not self._ready.done():
                    self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            elif not self._stop.is_set():
                logger.warning("MCP server %s: connection ended: %r", self.server.name, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.dead = True

    async def ready(self) -> Client:
        await asyncio.shield(self._ready)
        assert self.client is not None
        return self.client

    async def close(self) -> None:
        self.dead = True
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
        except (TimeoutError, Exception):  # noqa: BLE001 - a stuck transport: cancel it
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class McpPool:
    """Live MCP connections keyed by resolved server declaration."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.policy = EgressPolicy.from_settings(settings)
        self._connections: dict[str, _Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

    async def _connection(self, server: Resolved) -> Client:
        lock = self._locks.setdefault(server.key, asyncio.Lock())
        async with lock:
            conn = self._connections.get(server.key)
            if conn is not None and conn.dead:
                logger.info("MCP server %s: restarting (the previous connection ended)", server.name)
                await conn.close()
                conn = None
            if conn is None:
                if server.spec.url is not None:
                    await self.policy.check(server.spec.url, operator=server.operator)
                elif not server.operator and (refused := self.policy.stdio_refusal(server.name)) is not None:
                    raise refused
                conn = _Connection(server, self._settings)
                self._connections[server.key] = conn
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    return await conn.ready()
            except Exception as exc:
                self._connections.pop(server.key, None)
                await conn.close()
                raise _connect_failure(server, exc) from exc

    async def _discard(self, server: Resolved) -> None:
        conn = self._connections.pop(server.key, None)
        if conn is not None:
            await conn.close()

    async def list_tools(self, server: Resolved) -> list[ToolSpec]:
        client = await self._connection(server)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                listed = await client.list_tools()
        except (TimeoutError, MCPError, *_CONNECTION_ERRORS) as exc:
            await self._discard(server)
            raise StepFailed(f"tool server {server.name!r}: listing tools failed: {_describe(exc)}",
                             retryable=True) from exc
        return [ToolSpec(t.name, t.description or "", dict(t.input_schema)) for t in listed.tools]

    async def call(self, server: Resolved, tool: str, arguments: dict[str, Any], *, key: str,
                   seconds: float, traceparent: str | None = None) -> dict[str, Any]:
        """Call one tool; its result as step output data. Transport failures are retryable StepFailed."""
        client = await self._connection(server)
        meta: dict[str, Any] = {"idempotency_key": key}
        if traceparent:
            meta["traceparent"] = traceparent
        try:
            async with asyncio.timeout(seconds):
                result = await client.session.call_tool(tool, arguments, meta=meta)  # type: ignore[call-overload]
        except TimeoutError as exc:
            raise StepFailed(f"tool {server.name}/{tool}: no answer within {seconds:g}s", retryable=True) from exc
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                await self._discard(server)
                raise StepFailed(f"tool {server.name}/{tool}: the server closed the connection mid-call "
                                 f"(it will be restarted): {exc.error.message}", retryable=True) from exc
            retryable = exc.code not in (mcp_types.INVALID_PARAMS, mcp_types.METHOD_NOT_FOUND)
            raise StepFailed(f"tool {server.name}/{tool}: error {exc.code}: {exc.error.message}",
                             retryable=retryable) from exc
        except _CONNECTION_ERRORS as exc:
            await self._discard(server)
            raise StepFailed(f"tool {server.name}/{tool}: connection lost mid-call (the server will be "
                             f"restarted): {_describe(exc)}", retryable=True) from exc
        return result_data(result)


def result_data(result: mcp_types.CallToolResult) -> dict[str, Any]:
    content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
    text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
    return {"content": content, "structuredContent": result.structured_content, "isError": bool(result.is_error),
            "text": text}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MCPError):
        return exc.error.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _connect_failure(server: Resolved, exc: BaseException) -> StepFailed:
    if isinstance(exc, StepFailed):
        return exc
    if isinstance(exc, FileNotFoundError):
        return StepFailed(f"tool server {server.name!r}: command not found: {server.spec.command}", retryable=False)
    if isinstance(exc, TimeoutError):
        return StepFailed(f"tool server {server.name!r}: no handshake within {CONNECT_TIMEOUT:g}s", retryable=True)
    return StepFailed(f"tool server {server.name!r}: cannot connect: {_describe(exc)}", retryable=True)
