"""Helpers for tests that run a real worker in-process (WorkerService) and talk to it with RuntimeClient."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from worker.client import RuntimeClient
from worker.config import Settings
from worker.engine.service import WorkerService


def write_workflow(settings: Settings, filename: str, text: str) -> Path:
    path = settings.workflows_dir / filename
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@asynccontextmanager
async def running_worker(settings: Settings, **overrides: Any) -> AsyncIterator[WorkerService]:
    """A WorkerService in this event loop; stopped (leases handed back) on exit."""
    service = WorkerService(replace(settings, **overrides) if overrides else settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=2.0)


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[RuntimeClient]:
    client = await RuntimeClient.connect(settings)
    try:
        yield client
    finally:
        await client.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.1,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)


async def wait_status(client: RuntimeClient, run_id: str, status: str, timeout: float = 20.0) -> None:
    async def check() -> bool:
        return (await client.get_run(run_id)).summary.status.value == status

    await eventually(check, timeout, what=f"run {run_id} {status}")


async def pending_task(client: RuntimeClient, run_id: str, timeout: float = 20.0) -> Any:
    found: list[Any] = []

    async def check() -> bool:
        found[:] = await client.list_tasks(status="pending", run_id=run_id)
        return bool(found)

    await eventually(check, timeout, what=f"a pending task for {run_id}")
    return found[0]


def http_chain(n: int, *, delay_path: str = "step") -> str:
    """A workflow of n sequential http steps POSTing to the sink given as input `sink`."""
    steps = "\n".join(
        f"""  - id: s{i}
    uses: http
    with: {{method: POST, url: "${{{{ inputs.sink }}}}/{delay_path}{i}", json: {{i: {i}}}}}
    retry: {{max_attempts: 10, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}}"""
        for i in range(1, n + 1))
    return f"""name: chain
inputs:
  sink: {{type: string}}
steps:
{steps}
output: "${{{{ steps.s{n}.output.json }}}}"
"""
