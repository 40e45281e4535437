"""`wait_for_run` is woken by the worker's push when the run ends, not by polling the row."""

from __future__ import annotations

import asyncio
import time

from tests.support.runtime import client_for, running_worker, write_workflow
from worker.config import Settings

# the run ends between two re-reads of its row (0.5 s apart): only the push can wake its waiters at once
NAP = """
name: nap
steps:
  - {id: s, uses: python, with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 0.6}}}
"""


async def test_waiters_wake_when_the_end_is_pushed(settings: Settings) -> None:
    write_workflow(settings, "nap.yaml", NAP)
    async with running_worker(settings), client_for(settings) as client:
        lags = []
        for _ in range(5):
            run_id = await client.start_run("nap")
            # several waiters on one run share the client's one pub/sub connection
            summaries = await asyncio.gather(*(client.wait_for_run(run_id, timeout=20, poll=30) for _ in range(3)))
            woke = time.time()
            finished = summaries[0].finished_at
            assert finished is not None and all(s.status.value == "completed" for s in summaries)
            lags.append(woke - finished.timestamp())
        waiting = client.completions._waiters  # every wait unsubscribed
    # the row is re-read every 0.5 s at most: five ends all seen within 0.25 s means the push woke them
    assert max(lags) < 0.25, lags
    assert waiting == {}
