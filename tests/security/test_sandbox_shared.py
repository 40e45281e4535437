"""Async task functions share a sandbox: a workflow that makes one block the sandbox's event loop past its
timeout must not stall other runs. Its step times out, the sandbox is killed, and the runs that shared it
retry (a retryable error) and complete."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.support.runtime import client_for, running_worker, write_workflow
from worker.config import Settings

TASKS = '''
import asyncio, time

async def wait_for(seconds):
    time.sleep(seconds)  # deployed by the operator; the workflow picks the argument
    return "woke"

async def honest(n):
    await asyncio.sleep(0.2)
    return n * 2
'''


async def test_a_step_that_blocks_a_shared_sandbox_costs_its_neighbours_one_retry_only(settings: Settings) -> None:
    (settings.workflows_dir / "shared_tasks.py").write_text(TASKS)
    write_workflow(settings, "hostile.yaml", """
        name: hostile
        steps:
          - id: block
            uses: python
            timeout: 1s
            retry: {max_attempts: 1}
            with: {function: "shared_tasks:wait_for", args: {seconds: 600}}
        """)
    write_workflow(settings, "honest.yaml", """
        name: honest
        inputs: {n: {type: integer}}
        steps:
          - id: double
            uses: python
            timeout: 30s
            retry: {max_attempts: 3, initial_interval: 100ms}
            with: {function: "shared_tasks:honest", args: {n: "${{ inputs.n }}"}}
        """)
    async with running_worker(replace(settings, sandbox_min=1, sandbox_max=4)), client_for(settings) as client:
        # teach the pool that both functions are async (the first call of a function has a process to itself)
        first = await client.start_run("honest", {"n": 0})
        assert (await client.wait_for_run(first, timeout=30)).status.value == "completed"
        learn = await client.start_run("hostile")
        await client.wait_for_run(learn, timeout=30)
        hostile = await client.start_run("hostile")
        await asyncio.sleep(0.2)
        honest = [await client.start_run("honest", {"n": n}) for n in range(1, 9)]
        started = asyncio.get_running_loop().time()
        summaries = [await client.wait_for_run(r, timeout=60) for r in honest]
        elapsed = asyncio.get_running_loop().time() - started
        bad = await client.wait_for_run(hostile, timeout=30)
        details = [await client.get_run(r) for r in honest]
    assert bad.status.value == "failed" and "timed out" in (bad.error or "")
    assert [s.status.value for s in summaries] == ["completed"] * 8
    assert [d.steps[0].output for d in details] == [n * 2 for n in range(1, 9)]
    # at most one retry each (the neighbours of the killed sandbox), and no one waited for the 600 s call
    assert all(len(d.steps[0].attempts) <= 2 for d in details), [len(d.steps[0].attempts) for d in details]
    assert elapsed < 30
