"""A workflow file saved while Postgres is unreachable must still become the active version once
Postgres is back (hot reload changes new runs; an outage must not silently drop a reload)."""

from __future__ import annotations

import asyncio

from tests.support.chaos import chaos_stack, until

V1 = "name: greet\nsteps:\n  - {id: a, uses: set, with: {v: 1}}\noutput: v1\n"
V2 = "name: greet\nsteps:\n  - {id: a, uses: set, with: {v: 2}}\noutput: v2\n"


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
            await until(switched, 10, "v2 active once Postgres is back")
        finally:
            assert worker.alive()
        run_id = await stack.client.start_run("greet")
        assert (await stack.client.wait_for_run(run_id, timeout=20)).status.value == "completed"
        assert (await stack.client.get_run(run_id)).output == "v2"


async def test_saving_again_after_the_outage_activates_it() -> None:
    """The workaround, and a check that the test above fails for the reason it gives."""
    async with chaos_stack() as stack:
        stack.write("greet.yaml", V1)
        worker = stack.start_worker("w")
        await stack.wait_ready(worker)
        await stack.wait_workflows({"greet"})
        await asyncio.to_thread(stack.pg.stop)
        stack.write("greet.yaml", V2)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.pg.start)
        await stack.reconnect()
        await asyncio.sleep(1.0)
        stack.write("greet.yaml", V2)
        run_id = None

        async def v2_runs() -> bool:
            nonlocal run_id
            run_id = await stack.client.start_run("greet")
            summary = await stack.client.wait_for_run(run_id, timeout=20)
            return summary.status.value == "completed" and (await stack.client.get_run(run_id)).output == "v2"

        await until(v2_runs, 20, "v2 used by new runs", interval=0.5)
        assert worker.alive()
