"""The on-call loop (issue 18) from the console's keys against a real worker, Postgres and Redis (no fakes):
runs fail, the file is fixed (hot reload), the failed runs are marked and retried under the new version; a run
whose failed step the fix removed is skipped with the reason. And a run paused and resumed from the keyboard."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from textual.pilot import Pilot

from console.app import AgentConsole
from console.screens.confirm import ConfirmDialog, ReasonPrompt
from console.screens.retry import BulkRetryDialog
from console.widgets.nav_table import NavTable
from tests.console.helpers import notifications, screen_text, settle
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_retry_current_version import BROKEN, FIXED
from worker.config import Settings
from worker.models import RunStatus


async def _until(pilot: Pilot[None], check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the console did not show the expected state in time:\n"
                                 + screen_text(pilot.app))  # type: ignore[arg-type]
        await pilot.pause(0.1)


def _row_text(table: NavTable, key: str) -> str:
    return " ".join(str(cell) for cell in table.get_row(key))


async def test_failed_runs_are_retried_under_the_fixed_version_from_the_keyboard(settings: Settings) -> None:
    write_workflow(settings, "refunds.yaml", BROKEN)
    async with running_worker(settings), client_for(settings) as setup:
        normal = [await setup.start_run("refunds") for _ in range(3)]
        legacy = await setup.start_run("refunds", {"legacy": True})  # fails at legacy_refund, which the fix drops
        for run_id in [*normal, legacy]:
            assert (await setup.wait_for_run(run_id, timeout=30)).status.value == "failed"
        (info,) = await setup.list_workflows()
        broken_hash = info.def_hash
        write_workflow(settings, "refunds.yaml", FIXED)  # the fix, picked up by hot reload

        async def reloaded() -> bool:
            (now,) = await setup.list_workflows()
            return now.def_hash not in (None, broken_hash)

        await eventually(reloaded, 20, what="the fixed version active")
        (info,) = await setup.list_workflows()
        fixed_hash = info.def_hash
        assert fixed_hash is not None

        async with client_for(settings) as client:
            app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=1.0)
            async with app.run_test(size=(120, 36)) as pilot:
                await settle(pilot)
                runs = app.screen.query_one("#runs-table", NavTable)
                await _until(pilot, lambda: runs.row_count == 4)
                await pilot.press(*"s" * 7)  # all, running, retrying, waiting, paused, pending, queued, failed
                await settle(pilot)
                assert app.screen.status is RunStatus.FAILED  # type: ignore[attr-defined]
                await _until(pilot, lambda: runs.row_count == 4)
                await pilot.press("g", "space", "space", "space", "space")
                assert app.screen.marked == {*normal, legacy}  # type: ignore[attr-defined]
                await pilot.press("R")
                await _until(pilot, lambda: isinstance(app.screen, BulkRetryDialog))
                await settle(pilot)
                text = screen_text(app)
                # each run's default: the fixed version where it can take the run over, else the run's own
                assert "Retry 4 runs?" in text and "3 under the current version, 1 under its own version" in text
                await pilot.press("v")  # all under the current version: the legacy run is listed and skipped
                await settle(pilot)
                text = screen_text(app)
                assert "Retry 3 runs?" in text and f"3 \u00d7 refunds              current {fixed_hash[:8]}" in text
                assert f"{legacy[:8]} refunds: the current version is not compatible" in text
                dialog = app.screen
                assert isinstance(dialog, BulkRetryDialog)
                (left_out,) = [c for c in dialog.chosen() if c.version is None]
                assert left_out.option.run_id == legacy and left_out.why is not None
                assert "'legacy_refund', where it stopped, is not in the current version" in left_out.why
                await pilot.press("y")
                await _until(pilot, lambda: any(n.startswith("Retried 3 of 3") for n in notifications(app)))
                shown = next(n for n in notifications(app) if n.startswith("Retried 3 of 3"))
                assert "3 new runs: 3 under the current version, 0 under their own." in shown
                assert f"skipped {legacy[:8]}: the current version is not compatible" in shown
                retried = [e for e in app.command_log.entries if e.action == "retry"]
                assert [e.outcome for e in retried] == ["ok"] * 3
                assert {e.target for e in retried} == {f"run {r[:8]}" for r in normal}

                async def all_done() -> bool:
                    fresh = [r for r in await setup.list_runs(workflow="refunds", limit=50)
                             if r.run_id not in {*normal, legacy}]
                    return len(fresh) == 3 and all(r.status is RunStatus.COMPLETED for r in fresh)

                await eventually(all_done, 30, what="the three retries completed")
                await pilot.press("S", "S", "S", "S", "S", "S", "S")  # back to all
                await _until(pilot, lambda: runs.row_count == 7)
        fresh = [r for r in await setup.list_runs(workflow="refunds", limit=50) if r.run_id not in {*normal, legacy}]
        assert {r.def_hash for r in fresh} == {fixed_hash}
        for r in fresh:
            detail = await setup.get_run(r.run_id)
            assert detail.output is True and [s.step_id for s in detail.steps if s.attempts] == ["refund"]
        assert (await setup.get_run(legacy)).summary.status is RunStatus.FAILED  # left as it was
        assert [r.action for r in await setup.audit_records()] == ["replay"] * 3


REPLY = """
name: reply
inputs: {ticket: {type: string}}
steps:
  - {id: hold, uses: wait, with: {event: customer.replied, key: "${{ inputs.ticket }}", timeout: 1h}}
  - {id: after, uses: set, with: {text: "${{ steps.hold.output.event.data.text }}"}}
"""


async def test_pause_and_resume_a_run_from_the_keyboard(settings: Settings) -> None:
    write_workflow(settings, "reply.yaml", REPLY)
    async with running_worker(settings), client_for(settings) as setup:
        run_id = await setup.start_run("reply", {"ticket": "T-9"})

        async def parked() -> bool:
            return len(await setup.open_waits(run_id=run_id)) == 1

        await eventually(parked, 20, what="the run waits for its event")
        async with client_for(settings) as client:
            app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=1.0)
            async with app.run_test(size=(160, 40)) as pilot:
                await settle(pilot)
                runs = app.screen.query_one("#runs-table", NavTable)
                await _until(pilot, lambda: runs.row_count == 1 and "◷ event" in _row_text(runs, run_id))
                await pilot.press("p")
                await _until(pilot, lambda: isinstance(app.screen, ReasonPrompt))
                await pilot.press(*"customer on holiday", "enter")
                await _until(pilot, lambda: "⏸ paused" in _row_text(runs, run_id))
                assert "paused by" in _row_text(runs, run_id) and "customer on holiday" in _row_text(runs, run_id)
                summary = (await setup.get_run(run_id)).summary
                assert summary.status is RunStatus.PAUSED and summary.paused is not None
                assert summary.paused.reason == "customer on holiday"

                await pilot.press("p")
                await _until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
                await pilot.press("y")
                await _until(pilot, lambda: "◷ event" in _row_text(runs, run_id))
                assert [(e.action, e.outcome) for e in app.command_log.entries] == [("resume", "ok"), ("pause", "ok")]
        assert (await setup.get_run(run_id)).summary.paused is None
        assert [(r.action, r.reason) for r in await setup.audit_records()] == [
            ("pause", "customer on holiday"), ("resume", None)]
