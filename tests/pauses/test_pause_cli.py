"""`agentrt pause`, `agentrt paused`, `agentrt resume` as an on-call engineer types them (a real worker)."""

from __future__ import annotations

import json

from tests.pauses.test_pause_runs import THREE
from tests.support.runtime import client_for, running_worker, wait_status, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings


async def test_pause_list_and_resume_from_the_terminal(settings: Settings) -> None:
    write_workflow(settings, "three.yaml", THREE)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("three", {"first": 3.0})  # still on s1 when the CLI is up
        code, out, err = await agentrt(settings, "pause", run_id[:8], "--reason", "bad refunds")
        assert code == 0, err
        assert f"paused run {run_id}: no further step starts" in out
        await wait_status(client, run_id, "paused")

        code, out, err = await agentrt(settings, "runs")
        assert code == 0, err
        line = next(li for li in out.splitlines() if li.startswith(run_id[:8]))
        assert "paused by" in line and "bad refunds" in out  # the note may wrap onto the next line

        code, out, err = await agentrt(settings, "show", run_id)
        assert code == 0 and "paused by" in out and "bad refunds" in out, (out, err)

        code, out, err = await agentrt(settings, "pause", "--workflow", "three", "-m", "all of them", "--json")
        assert code == 0, err
        assert json.loads(out)["target"] == "three"
        code, out, err = await agentrt(settings, "paused", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert [w["workflow"] for w in listed["workflows"]] == ["three"]
        assert [r["run_id"] for r in listed["runs"]] == [run_id]
        assert listed["runs"][0]["paused"]["scope"] == "run"  # its own pause shows first

        code, out, err = await agentrt(settings, "resume", run_id)
        assert code == 0 and "its workflow is still paused" in out, (out, err)
        code, out, err = await agentrt(settings, "resume", "--workflow", "three")
        assert code == 0 and "resumed workflow three: 1 run go on" in out, (out, err)
        summary = await client.wait_for_run(run_id, timeout=20)
        assert summary.status.value == "completed"

        # usage errors say what to do
        code, out, err = await agentrt(settings, "pause")
        assert code == 2 and "give a run or --workflow W" in err
        code, out, err = await agentrt(settings, "resume", run_id)
        assert code != 0 and "not paused" in err
