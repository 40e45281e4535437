"""Retry under the version you just fixed (issue 18): runs fail, the file is fixed (hot reload), a bulk retry
runs them under the current version; a run whose failed step the fix removed is skipped with the reason,
never half-replayed. Through `agentrt runs --retry` as on-call types it, and the client API."""

from __future__ import annotations

import json

from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings

BROKEN = """
name: refunds
inputs: {legacy: {type: boolean, default: false}}
steps:
  - {id: lookup, uses: set, with: {ok: true}}
  - id: legacy_refund
    uses: python
    needs: [lookup]
    when: "${{ inputs.legacy }}"
    with: {function: "tests.support.wf_funcs:always_fail", args: {message: "legacy API is gone"}}
    retry: {max_attempts: 1}
  - id: refund
    uses: python
    needs: [lookup]
    with: {function: "tests.support.wf_funcs:always_fail", args: {message: "HTTP 500 from payments"}}
    retry: {max_attempts: 1}
"""
FIXED = """
name: refunds
inputs: {legacy: {type: boolean, default: false}}
steps:
  - {id: lookup, uses: set, with: {ok: true}}
  - {id: refund, uses: set, needs: [lookup], with: {refunded: true}}
output: "${{ steps.refund.output.refunded }}"
"""


async def test_bulk_retry_runs_the_fixed_version_and_skips_a_run_whose_failed_step_is_gone(settings: Settings) -> None:
    write_workflow(settings, "refunds.yaml", BROKEN)
    async with running_worker(settings) as service, client_for(settings) as client:
        normal = [await client.start_run("refunds") for _ in range(3)]
        legacy = await client.start_run("refunds", {"legacy": True})
        for run_id in [*normal, legacy]:
            assert (await client.wait_for_run(run_id, timeout=30)).status.value == "failed"
        (info,) = await client.list_workflows()
        broken_hash = info.def_hash

        write_workflow(settings, "refunds.yaml", FIXED)  # the fix, picked up by hot reload

        async def reloaded() -> bool:
            (now,) = await client.list_workflows()
            return now.def_hash not in (None, broken_hash)

        await eventually(reloaded, 20, what="the fixed version active")
        (info,) = await client.list_workflows()
        fixed_hash = info.def_hash
        options = {o.run_id: o for o in await client.retry_options([*normal, legacy])}
        assert all(options[r].default == "current" and options[r].changed for r in normal)
        assert options[legacy].default == "run" and not options[legacy].compatible
        assert "'legacy_refund', where it stopped, is not in the current version" in (options[legacy].problem or "")

        # the dry run states the count per version (auto: the legacy run keeps its own)
        code, out, err = await agentrt(settings, "runs", "--workflow", "refunds", "--status", "failed", "--retry")
        assert code == 0, err
        assert "4 run(s) would be retried" in out and f"3 under the current {fixed_hash[:12]} version" in out
        assert f"1 under its own {broken_hash[:12]} version" in out
        code, out, err = await agentrt(settings, "runs", "--workflow", "refunds", "--status", "failed", "--retry",
                                       "--version", "current")
        assert code == 0, err
        assert "3 run(s) would be retried" in out
        assert f"skipped {legacy[:8]}: the current version is not compatible" in out

        code, out, err = await agentrt(settings, "runs", "--workflow", "refunds", "--status", "failed", "--retry",
                                       "--version", "current", "--yes", "--json")
        assert code == 0, (out, err)
        report = json.loads(out)
        assert report["succeeded"] == 3 and [s["run_id"] for s in report["skipped"]] == [legacy]
        new_runs = [r["new_run"] for r in report["results"]]
        finals = [await client.wait_for_run(r, timeout=30) for r in new_runs]
        details = [await client.get_run(r) for r in new_runs]
        # auto: the legacy run goes back to its own (still broken) version rather than being skipped
        auto = await client.retry(legacy)
        assert auto.version == "run" and auto.def_hash == broken_hash and auto.new_run is not None
        assert (await client.wait_for_run(auto.new_run, timeout=30)).status.value == "failed"
        assert service is not None
    assert [f.status.value for f in finals] == ["completed"] * 3
    assert {f.def_hash for f in finals} == {fixed_hash}
    assert all(d.output is True for d in details)
    # the reused step was not run again: its output was copied from the failed run
    for d in details:
        assert [s.step_id for s in d.steps if s.attempts] == ["refund"]
