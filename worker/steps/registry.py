"""Builds the step executors a worker runs with, keyed by step kind (`uses:`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from worker.config import Settings
from worker.sandbox.modules import TaskModules
from worker.steps.agent import AgentExecutor
from worker.steps.base import StepExecutor
from worker.steps.http import HttpExecutor
from worker.steps.llm import LlmClient, LlmExecutor
from worker.steps.mcp_pool import McpPool
from worker.steps.python_step import PythonExecutor
from worker.steps.set_step import SetExecutor
from worker.steps.tool import ToolExecutor
from worker.streams.publisher import LivePublisher

logger = logging.getLogger(__name__)


def build_executors(settings: Settings) -> dict[str, StepExecutor]:
    """One executor per kind; each is shared by every step of that kind (e.g. one HTTP connection pool)."""
    # llm/tool own the LLM HTTP pool (with the live channel's publisher) and the MCP connection pool; agent
    # shares both
    llm, pool = LlmClient(settings, LivePublisher(settings)), McpPool(settings)
    tool = ToolExecutor(settings, pool, owns_pool=True)
    executors: list[StepExecutor] = [
        HttpExecutor(settings), PythonExecutor(settings, TaskModules.from_settings(settings)),
        SetExecutor(),
        LlmExecutor(settings, llm, owns_client=True, shared=tool.shared), tool,
        AgentExecutor(settings, llm, pool, tool.shared),
    ]
    return {executor.kind: executor for executor in executors}


async def start_executors(executors: Mapping[str, StepExecutor]) -> None:
    """Start what executors keep warm (the sandbox pool); a failure is a configuration error of the worker."""
    for executor in executors.values():
        start = getattr(executor, "start", None)
        if start is not None:
            await start()


async def close_executors(executors: Mapping[str, StepExecutor]) -> None:
    """Close every executor, even when one of them fails to close (the failure is logged)."""
    results = await asyncio.gather(*(e.aclose() for e in executors.values()), return_exceptions=True)
    for kind, result in zip(executors, results, strict=True):
        if isinstance(result, BaseException):
            logger.warning("closing the %s executor failed: %r", kind, result)
