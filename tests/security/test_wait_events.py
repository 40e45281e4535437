"""Hostile workflow files and hostile event senders against `uses: wait`.

- Event data is data: text in it that looks like an expression reaches the run as text, never evaluated.
- A workflow that opens hundreds of waits in one commit (a foreach) cannot exhaust Postgres' lock table
  and fail other runs' commits: the writer takes one global lock instead of one per key.
"""

from __future__ import annotations

from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from worker.config import Settings


async def test_event_data_that_looks_like_an_expression_stays_text(settings: Settings) -> None:
    write_workflow(settings, "echo.yaml", """
        name: echo
        steps:
          - {id: hold, uses: wait, with: {event: msg, key: k1, timeout: 60s}}
          - {id: show, uses: set, with: {said: "got ${{ steps.hold.output.event.data.text }}"}}
        """)
    hostile = "${{ run.id }} ${{ inputs }} {{ 7 * 7 }}"
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("echo")

        async def waiting() -> bool:
            return bool(await client.open_waits(run_id=run_id))

        await eventually(waiting, 20, what="the run waits")
        await client.send_event("msg", "k1", {"text": hostile})
        await wait_status(client, run_id, "completed")
        assert (await client.get_run(run_id)).output == {"said": f"got {hostile}"}


async def test_hundreds_of_waits_in_one_commit_do_not_break_other_runs(settings: Settings) -> None:
    write_workflow(settings, "many.yaml", """
        name: many
        inputs: {keys: {type: array}}
        steps:
          - id: hold
            uses: wait
            foreach: "${{ inputs.keys }}"
            with: {event: flood, key: "${{ item }}", timeout: 3s, lookback: 0s}
        """)
    write_workflow(settings, "plain.yaml", """
        name: plain
        steps:
          - {id: a, uses: set, with: {x: 1}}
          - {id: b, uses: set, with: {y: "${{ steps.a.output.x }}"}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        hostile = await client.start_run("many", {"keys": [str(i) for i in range(600)]})
        neighbours = [await client.start_run("plain") for _ in range(20)]

        async def all_open() -> bool:
            return len(await client.open_waits(run_id=hostile, limit=1000)) == 600

        await eventually(all_open, 60, what="600 waits registered")
        sent = await client.send_event("flood", "17")
        assert sent.delivered_to == (hostile,)
        for run_id in neighbours:
            await wait_status(client, run_id, "completed", timeout=60)
        await wait_status(client, hostile, "completed", timeout=60)
        output = (await client.get_run(hostile)).output
        assert isinstance(output, list) and len(output) == 600
        received = [i for i, x in enumerate(output) if x["received"]]
        assert received == [17]
