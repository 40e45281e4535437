"""A run backing off between attempts is listed as `retrying N/M (next in Xs)` with its last error, distinct
from running, and `status=retrying` finds it (issue 18: see why a run is stuck before opening it)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings

FLAKY = """
name: flaky
steps:
  - id: charge
    uses: python
    with: {function: "tests.support.wf_funcs:always_fail", args: {message: "HTTP 503 from payments"}}
    retry: {max_attempts: 5, initial_interval: 20s}
"""
FINE = """
name: fine
steps:
  - {id: nap, uses: sleep, with: {duration: 30s}}
"""


async def test_a_run_backing_off_is_listed_as_retrying_with_its_attempts_next_try_and_last_error(
        settings: Settings) -> None:
    write_workflow(settings, "flaky.yaml", FLAKY)
    write_workflow(settings, "fine.yaml", FINE)
    async with running_worker(settings), client_for(settings) as client:
        flaky = await client.start_run("flaky")
        fine = await client.start_run("fine")

        async def backing_off() -> bool:
            return [r.run_id for r in await client.list_runs(status="retrying")] == [flaky]

        await eventually(backing_off, 20, what="the flaky run listed as retrying")
        (summary,) = await client.list_runs(status="retrying")
        waiting = [r.run_id for r in await client.list_runs(status="waiting")]
        code, out, err = await agentrt(settings, "runs")
        code_f, out_f, err_f = await agentrt(settings, "runs", "--status", "retrying", "--json")
    assert summary.status.value == "waiting" and summary.waiting_on == "retry 2/5"
    assert summary.error is not None and "HTTP 503 from payments" in summary.error
    assert summary.wake_at is not None
    assert 10 < (summary.wake_at - datetime.now(tz=UTC)).total_seconds() <= 30  # 20 s with jitter
    assert set(waiting) == {flaky, fine}  # both parked; only one is retrying
    assert code == 0, err
    squeezed = "".join(out.split())  # the 80-column table folds long cells over lines
    assert "↻retrying2/5" in squeezed and "(nextin" in squeezed and "HTTP503frompayments" in squeezed
    assert code_f == 0, err_f
    assert '"run_id": "' + flaky + '"' in out_f and fine not in out_f
