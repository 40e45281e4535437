"""A workflow file saved while Postgres is unreachable must still become the active version once
Postgres is back (hot reload changes new runs; an outage must not silently drop a reload)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support.chaos import chaos_stack, until

V1 = "name: greet\nsteps:\n  - {id: a, uses: set, with: {v: 1}}\noutput: v1\n"
V2 = "name: greet\nsteps:\n  - {id: a, uses: set, with: {v: 2}}\noutput: v2\n"


@pytest.mark.xfail(strict=True, reason="DefinitionsSync._apply updates the in-memory Registry before "
                   "record_loaded writes to Postgres; when that write fails the watch loop restarts and the "
                   "change is lost, and saving the same content again is then 'unchanged' (never recorded) "
                   "until the worker restarts")
async def test_file_saved_during_a_postgres_outage_is_activated_afterwards() -> None:
    async with chaos_stack() as stack:
        stack.write("greet.yaml", V1)
        worker = stack.start_worker("w")
        await stack.wait_ready(worker)
        await stack.wait_workflows({"greet"})
        v1 = next(w.def_hash for w in await stack.client.list_workflows() if w.name == "greet")
        await asyncio.to_thread(stack.pg.stop)
        stack.write("greet.yaml", V2)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.pg.start)
        await stack.reconnect()

        async def switched() -> bool:
            hashes = {w.def_hash for w in await stack.client.list_workflows() if w.name == "greet"}
            return bool(hashes) and v1 not in hashes

        try:
            with contextlib.suppress(AssertionError):
                await until(switched, 6, "v2 active")
            pass  # an operator saves it again: must not be needed, must not hurt
            await until(switched, 6, "v2 active after saving again")
            run_id = await stack.client.start_run("greet")
            assert (await stack.client.get_run(run_id)).summary.workflow == "greet"
            assert (await stack.client.wait_for_run(run_id, timeout=20)).status.value == "completed"
            assert (await stack.client.get_run(run_id)).output == "v2"
        finally:
            assert worker.alive()
