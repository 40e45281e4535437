"""Pausing and resuming a schedule: audited, authorized by the policy file, and what the ticks missed while
paused become; `agentrt schedules` over the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.schedules.support import gaps, runs_per_tick, tick_times, ticker, ticks
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.support.services import REPO_ROOT
from worker.config import Settings
from worker.errors import Conflict, NotFound, PermissionDenied, WorkerError
from worker.identity import current

NIGHTLY = """
    name: nightly
    on: {schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}}
    steps:
      - {id: report, uses: set, with: {done: true}}
    """


async def test_pause_and_resume_are_audited_and_ticks_missed_meanwhile_follow_catch_up(settings: Settings) -> None:
    write_workflow(settings, "ticker.yaml", ticker("ticker", catch_up="all"))
    async with running_worker(settings), client_for(settings) as client:
        pool = client.pool
        await eventually(lambda: _count_at_least(pool, "ticker", 1), 20, what="a first tick")
        paused = await client.pause_schedule("ticker", "vendor outage", by="alice")
        assert paused.paused and paused.paused_by == "alice" and paused.paused_reason == "vendor outage"
        assert paused.paused_at is not None
        with pytest.raises(Conflict, match="already paused \\(by alice: vendor outage\\)"):
            await client.pause_schedule("ticker", "me too", by="bob")
        with pytest.raises(WorkerError, match="needs a reason"):
            await client.pause_schedule("ticker", " ")
        with pytest.raises(NotFound, match="has no schedule"):
            await client.pause_schedule("nope", "why not")
        await asyncio.sleep(0.3)  # a pass that began before the pause may still commit its tick
        count = len(await ticks(pool, "ticker"))
        await asyncio.sleep(3.0)
        assert len(await ticks(pool, "ticker")) == count  # no tick fires while paused

        resumed = await client.resume_schedule("ticker", "vendor is back", by="bob")
        assert not resumed.paused and resumed.paused_by is None
        with pytest.raises(Conflict, match="is not paused"):
            await client.resume_schedule("ticker", by="bob")
        await eventually(lambda: _count_at_least(pool, "ticker", count + 4), 20, what="ticks after resuming")
        times = await tick_times(pool, "ticker")
        records = await client.audit_records()
        verified = await client.verify_audit()
        counts = await runs_per_tick(pool, "ticker")
    # catch_up all: every tick that came due while paused fired after the resume, once each
    assert not gaps(times), gaps(times)
    assert set(counts.values()) == {1} and len(counts) == len(times)
    pauses = [r for r in records if r.action == "schedule.pause"]
    resumes = [r for r in records if r.action == "schedule.resume"]
    assert [(r.actor, r.workflow, r.reason, r.outcome) for r in pauses] == [
        ("alice", "ticker", "vendor outage", "done")]
    assert pauses[0].seen["paused"] is False and pauses[0].seen["next_fire_at"]
    assert [(r.actor, r.reason) for r in resumes] == [("bob", "vendor is back")]
    assert resumes[0].seen["paused"] is True and resumes[0].seen["paused_by"] == "alice"
    assert verified.ok


async def test_pausing_needs_the_cancel_permission(settings: Settings, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - workflows: ['*']\n    allow: {view: ['*'], cancel: [alice]}\n", encoding="utf-8")
    write_workflow(settings, "nightly.yaml", NIGHTLY)
    guarded = replace(settings, policy_file=policy)
    async with running_worker(settings), client_for(guarded) as client:
        await eventually(lambda: _listed(client, "nightly"), 20, what="the schedule listed")
        with pytest.raises(PermissionDenied):
            await client.pause_schedule("nightly", "let me", by="mallory")
        assert (await client.pause_schedule("nightly", "quarter close", by="alice")).paused
        records = [r for r in await client.audit_records() if r.action == "cancel" or r.action.startswith("schedule")]
    assert [(r.actor, r.action, r.outcome) for r in records] == [("mallory", "cancel", "denied"),
                                                                 ("alice", "schedule.pause", "done")]


def agentrt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def test_agentrt_schedules_lists_pauses_and_resumes(settings: Settings, worker_env: dict[str, str]) -> None:
    write_workflow(settings, "nightly.yaml", NIGHTLY)
    write_workflow(settings, "ticker.yaml", ticker("ticker"))
    async with running_worker(settings), client_for(settings) as client:
        await eventually(lambda: _count_at_least(client.pool, "ticker", 1), 20, what="a first tick")
        res = await asyncio.to_thread(agentrt, worker_env, "schedules", "--json")
        assert res.returncode == 0, res.stderr
        listed = {row["workflow"]: row for row in json.loads(res.stdout)}
        assert listed["nightly"]["schedule"] == "cron 0 2 * * * (Europe/Berlin)"
        next_fire = datetime.fromisoformat(listed["nightly"]["next_fire_at"]).astimezone(ZoneInfo("Europe/Berlin"))
        assert (next_fire.hour, next_fire.minute) == (2, 0)
        assert listed["ticker"]["schedule"] == "every 1s" and listed["ticker"]["last_run_id"]

        table = await asyncio.to_thread(agentrt, worker_env, "schedules")
        assert table.returncode == 0, table.stderr
        for text in ("nightly", "cron 0 2 * * *", "(Europe/Berlin)", "every 1s", "(in "):
            assert text in table.stdout, table.stdout
        # the ticker's last run, with its status (a tick a second: it may not have finished yet)
        assert any(s in table.stdout for s in ("completed", "running", "pending")), table.stdout
        assert max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout

        res = await asyncio.to_thread(agentrt, worker_env, "schedules", "pause", "nightly", "--reason", "quarter close")
        assert res.returncode == 0 and "paused the schedule of nightly" in res.stdout, res.stderr
        again = await asyncio.to_thread(agentrt, worker_env, "schedules", "pause", "nightly", "--reason", "x")
        assert again.returncode == 3 and "already paused" in again.stderr
        missing = await asyncio.to_thread(agentrt, worker_env, "schedules", "pause", "nope", "--reason", "x")
        assert missing.returncode == 4 and "has no schedule" in missing.stderr
        no_reason = await asyncio.to_thread(agentrt, worker_env, "schedules", "pause", "nightly")
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        table = await asyncio.to_thread(agentrt, worker_env, "schedules")
        assert f"by {current()}:" in table.stdout and "quarter close" in table.stdout, table.stdout

        res = await asyncio.to_thread(agentrt, worker_env, "schedules", "resume", "nightly", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["paused"] is False, res.stderr
        res = await asyncio.to_thread(agentrt, worker_env, "schedules", "ticks", "ticker", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)[0]["run_id"], res.stderr
        helped = await asyncio.to_thread(agentrt, worker_env, "schedules", "resume", "--help")
        assert "catch_up" in helped.stdout
        records = [r for r in await client.audit_records() if r.action.startswith("schedule.")]
    assert [(r.action, r.actor, r.origin, r.reason) for r in records] == [
        ("schedule.pause", current().user, "local", "quarter close"),
        ("schedule.resume", current().user, "local", None)]


async def _count_at_least(pool, workflow: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await ticks(pool, workflow)) >= n


async def _listed(client, workflow: str) -> bool:  # type: ignore[no-untyped-def]
    return any(s.workflow == workflow for s in await client.list_schedules())
