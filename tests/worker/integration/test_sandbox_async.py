"""Async task functions share a sandbox process (AGENTRT_SANDBOX_ASYNC_CALLS calls at once).

Real processes and pipes, as in test_sandbox_pool: what the pool learns from the first answer, that
concurrent async calls land in one process, that a sync call never shares one, and what a timeout does
to a shared process (a call that stops when cancelled costs its neighbours nothing; one that blocks
the loop gets the process killed and its neighbours a retryable error).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.worker.integration.test_sandbox_pool import _until, captured_logs, make_ctx, sandbox_settings
from worker.errors import StepFailed
from worker.steps.python_step import PythonExecutor
from worker.telemetry.logging import StepLogContext, current_step

ASYNC_TASKS = '''
import asyncio, logging, os, time

log = logging.getLogger("sbx.async")

async def nap(seconds, tag=None):
    started = time.monotonic()
    await asyncio.sleep(seconds)
    return {"pid": os.getpid(), "tag": tag, "started": started}

async def polite(seconds):
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        log.info("cancelled, cleaning up")
        raise
    return "finished"

async def blocks_the_loop(seconds):
    time.sleep(seconds)  # sync sleep inside async code: cancellation cannot reach it
    return "woke"

async def talk(tag):
    log.info("first line of %s", tag)
    await asyncio.sleep(0.02)
    log.info("second line of %s", tag)
    return tag

def sync_pid():
    return os.getpid()
'''


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[PythonExecutor]:
    settings = sandbox_settings(tmp_path, sandbox_min=1, sandbox_max=4, sandbox_async_calls=8)
    (settings.workflows_dir / "sbx_async.py").write_text(ASYNC_TASKS)
    executor = PythonExecutor(settings)
    await executor.start()
    yield executor
    await executor.aclose()


async def call(ex: PythonExecutor, name: str, args: dict[str, Any] | None = None, step_id: str = "py",
               timeout: float | None = None) -> Any:
    step = ex.execute({"function": f"sbx_async:{name}", "args": args or {}}, make_ctx(step_id))
    if timeout is None:
        return await step
    async with asyncio.timeout(timeout):
        return await step


async def test_concurrent_async_calls_share_one_process_up_to_the_limit(ex: PythonExecutor) -> None:
    assert ex.pool is not None
    first = await call(ex, "nap", {"seconds": 0})  # the first answer says the function is async
    results = await asyncio.gather(*(call(ex, "nap", {"seconds": 0.3, "tag": i}) for i in range(16)))
    assert [r["tag"] for r in results] == list(range(16))
    pids = [r["pid"] for r in results]
    # 16 calls at 8 per process: two processes, each serving 8 at once (a process per call would need 16)
    assert len(set(pids)) == 2 and all(pids.count(pid) == 8 for pid in set(pids))
    assert first["pid"] in pids
    assert ex.pool.size == 2


async def test_calls_waiting_for_room_are_served_in_order_as_room_frees(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path, sandbox_min=1, sandbox_max=1, sandbox_async_calls=2)
    (settings.workflows_dir / "sbx_async.py").write_text(ASYNC_TASKS)
    ex = PythonExecutor(settings)
    try:
        await call(ex, "nap", {"seconds": 0})
        waiting = [asyncio.create_task(call(ex, "nap", {"seconds": 0.3, "tag": i})) for i in range(6)]
        await asyncio.sleep(0.1)  # 0 and 1 run, 2..5 wait for room in the only process
        late = asyncio.create_task(call(ex, "nap", {"seconds": 0, "tag": "late"}))
        results = await asyncio.gather(*waiting, late)
    finally:
        await ex.aclose()
    started = {r["tag"]: r["started"] for r in results}
    assert len({r["pid"] for r in results}) == 1
    # room went to the calls that waited, in order; the late call did not jump the line
    assert started[2] <= started[4] and started[3] <= started[5]
    assert max(started[i] for i in range(6)) <= started["late"]


async def test_a_sync_call_never_shares_a_process_with_async_ones(ex: PythonExecutor) -> None:
    await call(ex, "nap", {"seconds": 0})
    naps = [asyncio.create_task(call(ex, "nap", {"seconds": 0.5})) for _ in range(3)]
    await asyncio.sleep(0.1)  # the naps are running
    sync_pid = await call(ex, "sync_pid")
    napping = {r["pid"] for r in await asyncio.gather(*naps)}
    assert len(napping) == 1 and sync_pid not in napping
    assert await call(ex, "sync_pid") in {sync_pid, *napping}  # and once they are done, any process will do


async def test_a_timed_out_async_call_is_cancelled_and_its_neighbours_finish(ex: PythonExecutor) -> None:
    await call(ex, "nap", {"seconds": 0})
    await call(ex, "polite", {"seconds": 0})  # learned: async (a first call has a process to itself)
    neighbours = [asyncio.create_task(call(ex, "nap", {"seconds": 0.6, "tag": i})) for i in range(3)]
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await call(ex, "polite", {"seconds": 30}, timeout=0.2)
    results = await asyncio.gather(*neighbours)
    assert [r["tag"] for r in results] == [0, 1, 2]
    pid = results[0]["pid"]
    assert psutil.pid_exists(pid) and (await call(ex, "nap", {"seconds": 0}))["pid"] == pid  # not killed
    assert ex.pool is not None and ex.pool.started_total == 1


async def test_a_timed_out_call_that_blocks_the_loop_takes_its_process_down(ex: PythonExecutor) -> None:
    await call(ex, "blocks_the_loop", {"seconds": 0})  # learned: async
    shared = (await call(ex, "nap", {"seconds": 0}))["pid"]
    neighbour = asyncio.create_task(call(ex, "nap", {"seconds": 0.3}))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await call(ex, "blocks_the_loop", {"seconds": 30}, timeout=0.3)
    with pytest.raises(StepFailed) as info:
        await neighbour
    assert info.value.retryable is True
    assert info.value.reason == (
        "the sandbox process running this step was killed (a step in it overran its timeout and did not stop "
        "when cancelled); a fresh one was started")
    await _until(lambda: not psutil.pid_exists(shared), "the blocked sandbox is gone")
    assert (await call(ex, "nap", {"seconds": 0}))["pid"] != shared


async def test_log_lines_of_concurrent_calls_belong_to_their_own_steps(ex: PythonExecutor) -> None:
    await call(ex, "talk", {"tag": "warm-up"})

    async def step(tag: str) -> Any:
        token = current_step.set(StepLogContext("run-7", tag, None, 1, "t" * 32, "s" * 16))
        try:
            return await call(ex, "talk", {"tag": tag}, step_id=tag)
        finally:
            current_step.reset(token)

    tags = [f"step{i}" for i in range(6)]
    with captured_logs() as capture:
        assert await asyncio.gather(*(step(tag) for tag in tags)) == tags
    rows = [row for row in capture.drain() if row[6] == "sbx.async"]
    by_step: dict[str, list[str]] = {}
    for row in rows:
        by_step.setdefault(row[1], []).append(row[7])
    assert by_step == {tag: [f"first line of {tag}", f"second line of {tag}"] for tag in tags}


async def test_the_async_call_limit_must_be_positive(tmp_path: Path) -> None:
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="AGENTRT_SANDBOX_ASYNC_CALLS"):
        PythonExecutor(sandbox_settings(tmp_path, sandbox_async_calls=0))


def test_sandbox_async_calls_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config import Settings

    assert Settings().sandbox_async_calls == 64
    monkeypatch.setenv("AGENTRT_SANDBOX_ASYNC_CALLS", "12")
    assert Settings.from_env().sandbox_async_calls == 12
