"""Listing runs as the console's runs screen does: orders, search, status, against a real worker."""

from __future__ import annotations

import pytest

from tests.support.runtime import client_for, running_worker, write_workflow
from worker.config import Settings
from worker.errors import WorkerError


async def test_list_runs_orders_search_and_status(settings: Settings) -> None:
    write_workflow(settings, "quick.yaml", "name: quick\nsteps: [{id: a, uses: set, with: {x: 1}}]\n")
    write_workflow(settings, "slow.yaml", "name: slow\nsteps: [{id: z, uses: sleep, with: {duration: 400ms}}]\n")
    async with running_worker(settings), client_for(settings) as client:
        started = []
        for wf in ("slow", "quick", "slow", "quick"):
            started.append(await client.start_run(wf))
            await client.wait_for_run(started[-1], timeout=20)
        newest = [r.run_id for r in await client.list_runs(limit=10)]
        assert newest == started[::-1]
        assert [r.run_id for r in await client.list_runs(limit=10, order="oldest")] == started
        longest = await client.list_runs(limit=10, order="longest")
        assert [r.workflow for r in longest] == ["slow", "slow", "quick", "quick"]
        assert [r.run_id for r in longest[:2]] in ([started[0], started[2]], [started[2], started[0]])
        by_workflow = await client.list_runs(limit=10, order="workflow")
        assert [r.run_id for r in by_workflow] == [started[3], started[1], started[2], started[0]]
        assert [r.run_id for r in await client.list_runs(limit=1, order="oldest")] == [started[0]]
        searched = await client.list_runs(limit=10, search="^SL", order="oldest")  # regex, case-insensitive
        assert [r.run_id for r in searched] == [started[0], started[2]]
        assert await client.list_runs(status="failed", order="longest") == []
        with pytest.raises(WorkerError, match="unknown run order 'fastest'; one of newest, oldest, longest, workflow"):
            await client.list_runs(order="fastest")
