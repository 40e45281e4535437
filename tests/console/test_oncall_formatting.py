"""Unit tests for the pure on-call helpers (issue 18): pause and retry texts, the rows and tabs of the runs list,
what `p` does to a set of runs, what a bulk retry does per version, and the command log's client wrapper."""

from __future__ import annotations

import inspect
from dataclasses import replace
from datetime import timedelta

import pytest

from console.backend import ConsoleClient
from console.command_log import LOGGED, CommandLog, LoggedClient
from console.filtering import RETRYING, next_status, parse_tab
from console.formatting import pause_text, retry_text
from console.screens.pausing import pause_targets
from console.screens.retry import choose, count_line, groups, version_block
from console.screens.run_rows import activity, run_label, run_state, status_tabs
from tests.console.fakes import (
    FIXED_NOW,
    LEGACY_RUN,
    OLD_HELLO_RUN,
    PAUSED_RUN,
    PAUSING_RUN,
    RETRYING_RUN,
    FakeRuntimeClient,
    ago,
    fixed_now,
    make_runs,
    rid,
)
from worker.client.retries import RetryOption
from worker.errors import Conflict
from worker.models import PauseInfo, RunStatus


def runs() -> dict[int, object]:
    return {n: next(r for r in make_runs() if r.run_id == rid(n)) for n in (2, 5, 6, 12, PAUSED_RUN, PAUSING_RUN,
                                                                               RETRYING_RUN)}


# -- texts -------------------------------------------------------------------------------------------------
def test_pause_text_says_who_when_why_and_whether_the_workflow_was_paused() -> None:
    mine = PauseInfo("alice@10.0.0.7", ago(minutes=3), "incident", "run")
    assert pause_text(mine, FIXED_NOW) == "paused by alice@10.0.0.7 3m ago: incident"
    assert pause_text(mine, FIXED_NOW, short=True) == "by alice 3m ago: incident"
    theirs = PauseInfo("bob", FIXED_NOW, None, "workflow")
    assert pause_text(theirs, FIXED_NOW) == "paused (workflow) by bob just now"
    assert pause_text(replace(mine, reason="two\nlines"), FIXED_NOW).endswith(": two lines")


def test_retry_text_says_the_next_attempt_when_and_the_last_error() -> None:
    soon = FIXED_NOW + timedelta(seconds=12)
    assert retry_text("retry 3/5", soon, "HTTP 503", FIXED_NOW) == "retrying 3/5 (next in 12s): HTTP 503"
    assert retry_text("retry 3/5", soon, "HTTP 503", FIXED_NOW, short=True) == "3/5 in 12s: HTTP 503"
    assert retry_text("retry 3/5", ago(seconds=1), None, FIXED_NOW) == "retrying 3/5 (due)"
    assert retry_text("retry", None, "boom", FIXED_NOW) == "retrying: boom"
    assert retry_text("retry", None, "boom", FIXED_NOW, short=True) == "boom"


# -- rows and tabs ----------------------------------------------------------------------------------------
def test_rows_say_paused_pausing_retrying_and_uncertain() -> None:
    r = runs()
    assert run_label(r[PAUSED_RUN])[0] == "⏸ paused"  # type: ignore[arg-type]
    assert run_label(r[PAUSING_RUN])[0] == "⏸ pausing"  # type: ignore[arg-type]
    assert run_label(r[RETRYING_RUN])[0] == "↻ retrying"  # type: ignore[arg-type]
    assert run_label(r[12], uncertain=True)[0] == "⚠ uncertain"  # type: ignore[arg-type]
    assert run_label(r[12])[0] == run_label(r[2])[0] == "⏸ human"  # type: ignore[arg-type]
    assert activity(r[PAUSED_RUN], FIXED_NOW, wide=False) == \
        "by oscar 3m ago: payments incident INC-4411: hold refunds"  # type: ignore[arg-type]
    assert activity(r[PAUSING_RUN], FIXED_NOW, wide=True) == \
        "greet · paused by oscar@10.0.0.8 8s ago: checking the greeting copy"  # type: ignore[arg-type]
    assert activity(r[RETRYING_RUN], FIXED_NOW, wide=True) == \
        "render · retrying 2/3 (next in 12s): HTTP 503 Service Unavailable from reports.example"  # type: ignore
    assert run_state(r[PAUSING_RUN], FIXED_NOW).endswith("(finishing its step in flight)")  # type: ignore
    assert run_state(r[RETRYING_RUN], FIXED_NOW) == "retrying 2/3 (next in 12s)"  # type: ignore[arg-type]
    assert run_state(r[5], FIXED_NOW) is None  # type: ignore[arg-type]


def test_tabs_count_every_run_once_and_shrink_to_fit() -> None:
    counts = {"running": 3, "waiting": 5, "paused": 1, "failed": 12, "completed": 1234}
    wide = status_tabs(counts, 2, None, 200)
    assert [label for _, label, _ in wide][:4] == [" all 1255 ", " running 3 ", " retrying 2 ", " waiting 5 "]
    assert [name for name, _, _ in wide] == ["all", "running", "retrying", "waiting", "paused", "pending", "failed",
                                             "completed", "cancelled"]  # queued: none, so no tab
    assert [chosen for _, _, chosen in status_tabs(counts, 2, RETRYING, 200)][2] is True
    for width, second in ((100, "running 3 "), (75, "run 3 "), (60, "▶3 ")):
        labels = [label for _, label, _ in status_tabs(counts, 2, None, width)]
        assert labels[:2] == ["all 1255 ", second] and sum(map(len, labels)) <= width
    assert [label for _, label, _ in status_tabs(counts, 2, None, 60)][2] == "↻2 "
    no_paused = status_tabs({**counts, "paused": 0}, 0, None, 200)
    assert "paused" not in [name for name, _, _ in no_paused]
    assert "paused" in [name for name, _, _ in status_tabs({}, 0, RunStatus.PAUSED, 200)]


def test_the_status_cycle_visits_retrying_and_paused() -> None:
    assert next_status(RunStatus.RUNNING) == RETRYING and next_status(RETRYING) is RunStatus.WAITING
    assert next_status(RunStatus.WAITING) is RunStatus.PAUSED
    assert parse_tab("all") is None and parse_tab("retrying") == RETRYING and parse_tab("paused") is RunStatus.PAUSED


# -- p -----------------------------------------------------------------------------------------------------
def test_p_pauses_the_unpaused_and_resumes_only_when_all_are_paused() -> None:
    r = runs()
    plan = pause_targets([r[6], r[PAUSED_RUN], r[5]])  # type: ignore[list-item]
    assert (plan.mode, [x.run_id for x in plan.runs]) == ("pause", [rid(6)])
    assert plan.notes == ["1 already finished, skipped", "1 already paused, skipped"]
    plan = pause_targets([r[PAUSED_RUN], r[PAUSING_RUN], r[5]])  # type: ignore[list-item]
    assert (plan.mode, {x.run_id for x in plan.runs}) == ("resume", {rid(PAUSED_RUN), rid(PAUSING_RUN)})
    held = replace(r[12], status=RunStatus.PAUSED,  # type: ignore[type-var]
                   paused=PauseInfo("oscar", FIXED_NOW, "x", "workflow"))
    plan = pause_targets([held, r[PAUSED_RUN]])  # type: ignore[list-item]
    assert plan.mode == "resume" and [x.run_id for x in plan.runs] == [rid(PAUSED_RUN)]
    assert "paused with their workflow (fan-out)" in plan.notes[0]
    assert pause_targets([r[5]]).runs == []  # type: ignore[list-item]


# -- bulk retry ----------------------------------------------------------------------------------------------
def _option(run_id: str, *, changed: bool, compatible: bool = True, status: str = "failed") -> RetryOption:
    return RetryOption(run_id, "wf", status, "a" * 40, ("b" if changed else "a") * 40, compatible,
                       None if compatible else "step 'x', where it stopped, is not in the current version")


def test_a_bulk_retry_counts_per_version_and_skips_what_it_cannot_do() -> None:
    moved, same, stuck = _option("r1", changed=True), _option("r2", changed=False), \
        _option("r3", changed=True, compatible=False)
    done = _option("r4", changed=False, status="completed")
    done = replace(done, problem="it is completed, not failed or cancelled")
    auto = [choose(o, "auto") for o in (moved, same, stuck, done)]
    assert [c.version for c in auto] == ["current", "run", "run", None]
    assert count_line(auto) == "1 under the current version, 2 under their own versions, 1 skipped"
    assert groups(auto) == [("current", "wf", "bbbbbbbb", 1), ("own", "wf", "aaaaaaaa", 1),
                            ("own, current", "wf", "aaaaaaaa", 1)]
    current = [choose(o, "current") for o in (moved, same, stuck)]
    assert [c.version for c in current] == ["current", "current", None]
    assert current[2].why is not None and "is not in the current version" in current[2].why
    assert [choose(o, "run").version for o in (moved, same, stuck)] == ["run", "run", "run"]
    assert [choose(o, "run").def_hash for o in (moved, stuck)] == ["a" * 40, "a" * 40]
    assert choose(moved, "current").def_hash == "b" * 40


def test_the_version_block_names_both_versions_the_default_and_the_check() -> None:
    moved, stuck = _option("r1", changed=True), _option("r3", changed=True, compatible=False)
    text = version_block(moved, "current", None, True, 72).plain
    assert "● current bbbbbbbb (default)  ○ run's own aaaaaaaa" in text and "✓ the current version can" in text
    text = version_block(stuck, "run", stuck.problem, True, 72).plain
    assert "○ current bbbbbbbb  ● run's own aaaaaaaa (default)" in text and "✗ step 'x'" in text
    assert "checked when chosen" in version_block(moved, "run", None, False, 72).plain
    assert "has not changed" in version_block(_option("r2", changed=False), "run", None, True, 72).plain
    assert version_block(None, "run", None, False, 72).plain == ""


# -- the command log -----------------------------------------------------------------------------------------
READS = frozenset({"close", "list_runs", "count_runs", "count_retrying", "get_run", "list_tasks", "get_task",
                   "list_workflows", "workflow_versions", "workflow_diff", "workflow_events", "list_workers",
                   "spans", "step_logs", "health", "open_waits", "list_schedules", "paused_workflows",
                   "retry_options", "watch_events", "limits", "budgets", "live_entries", "follow_live",
                   "get_view", "list_views", "read_replica"})


def test_every_call_that_changes_the_runtime_is_logged() -> None:
    members = {name for name, _ in inspect.getmembers(ConsoleClient) if not name.startswith("_")}
    assert members - READS == LOGGED, "a new ConsoleClient call: log it in LoggedClient, or list it in READS"
    assert members >= READS
    for name in LOGGED:  # the wrapper keeps the protocol's signature
        assert inspect.signature(getattr(LoggedClient, name)) == inspect.signature(getattr(ConsoleClient, name)), name


async def test_the_wrapper_records_results_refusals_and_skips_and_passes_reads_through() -> None:
    fake = FakeRuntimeClient()
    log = CommandLog(fixed_now, size=3)
    client = LoggedClient(fake, log)
    assert len(await client.list_runs(limit=500)) == len(fake.runs)  # a read: passed through, not logged
    await client.replay(rid(5), dry_run=True)  # a plan only
    assert log.entries == []
    await client.pause_run(rid(6), reason="incident")
    with pytest.raises(Conflict):
        await client.pause_run(rid(6), reason="again")
    skipped = await client.retry(rid(6))
    moved = await client.retry(rid(OLD_HELLO_RUN))
    entries = log.entries
    assert [(e.seq, e.action, e.outcome) for e in entries] == [(4, "retry", "ok"), (3, "retry", "skipped"),
                                                               (2, "pause", "error")]
    assert log.count == 4  # the oldest was pushed out by the bound
    assert entries[0].result == f"new run {moved.new_run[:8]} under the current version fcde2b2e"  # type: ignore
    assert entries[1].result == skipped.skipped == "it is paused, not failed or cancelled"
    assert entries[2].detail == "again" and "already paused" in entries[2].result and entries[2].at == FIXED_NOW
    heard: list[str] = []
    log.subscribe(lambda e: heard.append(e.action))
    await client.retry(rid(LEGACY_RUN), "current")
    assert heard == ["retry"] and log.entries[0].outcome == "skipped"
