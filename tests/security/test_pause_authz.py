"""Pausing stops other people's work: it needs the `cancel` permission on the workflow (denials audited),
and the reason a person types is shown as text everywhere, never as markup or control sequences."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.pauses.test_pause_runs import THREE
from tests.support.runtime import client_for, running_worker, wait_status, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings
from worker.errors import PermissionDenied, WorkerError

MARKUP_REASON = "[red]fake[/red] [link=http://evil]x[/link]"
CONTROL_REASONS = ["clear \x1b[2J", "title \x1b]0;owned\x07", "two\nlines", "nul \x00"]


async def test_pause_and_resume_need_the_cancel_permission_and_denials_are_audited(
        settings: Settings, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - workflows: ['*']\n    allow: {view: ['*'], cancel: [alice]}\n", encoding="utf-8")
    write_workflow(settings, "three.yaml", THREE)
    guarded = replace(settings, policy_file=policy)
    async with running_worker(settings), client_for(guarded) as client:
        run_id = await client.start_run("three", {"first": 2.0})
        with pytest.raises(PermissionDenied):
            await client.pause_run(run_id, by="mallory")
        with pytest.raises(PermissionDenied):
            await client.pause_workflow("three", by="mallory")
        await client.pause_run(run_id, by="alice", settle=0)
        with pytest.raises(PermissionDenied):
            await client.resume_run(run_id, by="mallory")
        records = [(r.actor, r.action, r.outcome) for r in await client.audit_records()
                   if r.action in ("cancel", "pause", "resume")]
    assert records == [("mallory", "cancel", "denied"), ("mallory", "cancel", "denied"), ("alice", "pause", "done"),
                       ("mallory", "cancel", "denied")]


async def test_a_pause_reason_is_shown_as_text_not_markup_or_terminal_controls(settings: Settings) -> None:
    write_workflow(settings, "three.yaml", THREE)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("three", {"first": 2.0})
        for reason in CONTROL_REASONS:  # refused with a clear error, nothing recorded
            with pytest.raises(WorkerError, match="control character"):
                await client.pause_run(run_id, reason=reason, by="alice")
            with pytest.raises(WorkerError, match="control character"):
                await client.pause_workflow("three", reason=reason, by="alice")
        assert (await client.get_run(run_id)).summary.paused is None
        assert await client.paused_workflows() == []
        await client.pause_run(run_id, reason=MARKUP_REASON, by="alice", settle=0)
        await wait_status(client, run_id, "paused")
        code, out, err = await agentrt(settings, "show", run_id)
        code_runs, out_runs, err_runs = await agentrt(settings, "paused")
    assert code == 0 and code_runs == 0, (err, err_runs)
    assert "[red]fake[/red] [link=http://evil]x[/link]" in out  # literally, not styled
    assert "[red]fake[/red]" in out_runs
