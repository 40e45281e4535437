"""The console's test double stays honest: the same assertions against `FakeRuntimeClient` and against
`RuntimeClient` on a real worker (Postgres, Redis), so a screen cannot pass against behaviour the runtime
does not have.

Both are typed against `console.backend.ConsoleClient` (mypy checks the assignments below, and
tests/test_static.py runs mypy on this file). The assertions are about behaviour, not data: each side
supplies its own runs, tasks, waits and schedules, found through the client itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from console.backend import ConsoleClient
from tests.console.fakes import FakeRuntimeClient
from tests.support.runtime import client_for, running_worker, write_workflow
from worker.client.runs import RunCounts
from worker.config import Settings
from worker.errors import Conflict, NotFound, WorkerError
from worker.models import RunStatus, RunSummary, TaskStatus
from worker.search.filters import RunFilter

if TYPE_CHECKING:
    from worker.client import RuntimeClient

    def _fake_is_a_console_client(fake: FakeRuntimeClient) -> ConsoleClient:
        return fake

    def _runtime_is_a_console_client(real: RuntimeClient) -> ConsoleClient:
        return real


@dataclass
class Side:
    client: ConsoleClient
    settle: Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]
    """Wait until a condition holds (the real runtime applies some commands asynchronously)."""


async def _at_once(check: Callable[[], Awaitable[bool]]) -> None:
    assert await check()


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, "not reached within 20 s"
        await _sleep(0.1)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


SEEDED = {
    "done.yaml": "name: done\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n",
    "broken.yaml": "name: broken\nsteps:\n  - {id: a, uses: set, with: {x: \"${{ 1 / 0 }}\"}}\n",
    "gate.yaml": "name: gate\nsteps:\n  - {id: ask, uses: approval, with: {prompt: ok?}}\n",
    "reply.yaml": ("name: reply\nsteps:\n  - {id: hold, uses: wait, with: {event: customer.replied, key: T-1, "
                   "timeout: 1h}}\n"),
    "nightly.yaml": ("name: nightly\non: {schedule: {cron: \"0 2 * * *\"}}\nsteps:\n"
                     "  - {id: a, uses: set, with: {x: 1}}\n"),
    # backs off between attempts for a minute: listed as retrying
    "flaky.yaml": ("name: flaky\nsteps:\n  - id: a\n    uses: python\n"
                   "    with: {function: \"tests.support.wf_funcs:always_fail\", args: {message: \"HTTP 503\"}}\n"
                   "    retry: {max_attempts: 5, initial_interval: 60s}\n"),
    # fail at step b, then are fixed (below): fixme's b is still there, gone's b was removed
    "fixme.yaml": ("name: fixme\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n"
                   "  - {id: b, uses: set, needs: [a], with: {x: \"${{ 1 / 0 }}\"}}\n"),
    "gone.yaml": ("name: gone\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n"
                  "  - {id: b, uses: set, needs: [a], with: {x: \"${{ 1 / 0 }}\"}}\n"),
    # the operator's limits, and a workflow with a budget (issue 17)
    "limits.yaml": ("limits:\n  helpdesk-api: {requests: 20/s, concurrency: 10}\n"
                    "  openai-gpt4o: {requests: 500/min, tokens: 30000/min,\n"
                    "                 match: {provider: openai, model: gpt-4o*}}\n"),
    "budgeted.yaml": ("name: budgeted\nbudget: {usd_per_day: 5.0, tokens_per_run: 20000, on_exceed: fail}\n"
                      "steps:\n  - {id: a, uses: set, with: {x: 1}}\n"),
}
FIXED = {
    "fixme.yaml": ("name: fixme\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n"
                   "  - {id: b, uses: set, needs: [a], with: {x: 2}}\n"),
    "gone.yaml": "name: gone\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n  - {id: c, uses: set, with: {x: 3}}\n",
}


@pytest.fixture(params=["fake", "runtime"])
async def side(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Side]:
    if request.param == "fake":
        yield Side(FakeRuntimeClient(), _at_once)
        return
    for name, text in SEEDED.items():
        write_workflow(settings, name, text)
    async with running_worker(settings), client_for(settings) as client:
        for workflow in ("done", "broken", "gate", "reply", "flaky", "fixme", "gone"):
            await client.start_run(workflow)

        async def seeded() -> bool:
            statuses = {r.workflow: r.status.value for r in await client.list_runs()}
            tasks = await client.list_tasks(status="pending")
            return (statuses.get("done") == "completed" and statuses.get("broken") == "failed" and bool(tasks)
                    and statuses.get("fixme") == statuses.get("gone") == "failed"
                    and await client.count_retrying() == 1
                    and bool(await client.open_waits()) and bool(await client.list_schedules()))

        await _eventually(seeded)
        before = {w.name: w.def_hash for w in await client.list_workflows()}
        for name, text in FIXED.items():
            write_workflow(settings, name, text)

        async def fixed() -> bool:
            now = {w.name: w.def_hash for w in await client.list_workflows()}
            return all(now[n] not in (None, before[n]) for n in ("fixme", "gone"))

        await _eventually(fixed)
        yield Side(client, _eventually)


async def test_listing_filters_and_orders_runs(side: Side) -> None:
    everything = await side.client.list_runs(limit=500)
    assert everything, "each side has runs"
    newest_first = [r.created_at for r in everything]
    assert newest_first == sorted(newest_first, reverse=True)
    assert [r.created_at for r in await side.client.list_runs(limit=500, order="oldest")] == newest_first[::-1]
    assert len(await side.client.list_runs(limit=1)) == 1
    counts = await side.client.count_runs()
    assert isinstance(counts, RunCounts) and not counts.estimated  # a few runs: each status counted exactly
    for status in {r.status for r in everything}:
        listed = await side.client.list_runs(status=status.value, limit=500)
        assert listed and {r.status for r in listed} == {status}
        assert counts[status.value] == len(listed)
    workflow = everything[0].workflow
    assert {r.workflow for r in await side.client.list_runs(workflow=workflow, limit=500)} == {workflow}


async def test_a_run_is_found_by_a_unique_prefix_and_an_unknown_one_is_not_found(side: Side) -> None:
    run = (await side.client.list_runs(limit=1))[0]
    assert (await side.client.get_run(run.run_id[:8])).summary.run_id == run.run_id
    with pytest.raises(NotFound):
        await side.client.get_run("00000000-0000-4000-8000-000000000000")


async def test_cancelling_a_finished_run_conflicts_and_an_active_one_ends_cancelled(side: Side) -> None:
    finished = [r for r in await side.client.list_runs(limit=500) if r.status.terminal]
    with pytest.raises(Conflict):
        await side.client.cancel(finished[0].run_id, reason="too late")
    active = [r for r in await side.client.list_runs(limit=500) if not r.status.terminal]
    target = active[0].run_id
    returned = await side.client.cancel(target, reason="contract")
    assert returned.run_id == target

    async def cancelled() -> bool:
        return (await side.client.get_run(target)).summary.status == RunStatus.CANCELLED

    await side.settle(cancelled)


async def test_a_decided_task_cannot_be_decided_again(side: Side) -> None:
    pending = await side.client.list_tasks(status="pending")
    assert pending and {t.status for t in pending} == {TaskStatus.PENDING}
    task = pending[0]
    decided = await side.client.decide(task.task_id, approve=True, reason="contract")
    assert decided.status == TaskStatus.APPROVED
    with pytest.raises(Conflict):
        await side.client.decide(task.task_id, approve=False, reason="second thoughts")
    assert task.task_id not in {t.task_id for t in await side.client.list_tasks(status="pending")}


async def test_an_event_resumes_the_run_that_waits_for_it(side: Side) -> None:
    waits = await side.client.open_waits()
    assert waits
    wait = waits[0]
    assert [w.run_id for w in await side.client.open_waits(run_id=wait.run_id)] == [wait.run_id]
    delivery = await side.client.send_event(wait.name, wait.key, {"text": "contract"})
    assert wait.run_id in delivery.delivered_to and delivery.replayed is False

    async def resumed() -> bool:
        return wait.run_id not in {w.run_id for w in await side.client.open_waits()}

    await side.settle(resumed)


async def test_schedules_pause_once_and_resume(side: Side) -> None:
    active = [s for s in await side.client.list_schedules() if not s.paused]
    assert active
    workflow = active[0].workflow
    paused = await side.client.pause_schedule(workflow, "contract")
    assert paused.paused and paused.paused_reason == "contract"
    with pytest.raises(Conflict):
        await side.client.pause_schedule(workflow, "again")
    with pytest.raises(WorkerError):
        await side.client.pause_schedule(workflow, "   ")
    with pytest.raises(NotFound):
        await side.client.pause_schedule("no-such-workflow", "x")
    resumed = await side.client.resume_schedule(workflow)
    assert not resumed.paused


async def test_workflows_and_their_versions(side: Side) -> None:
    workflows = await side.client.list_workflows()
    assert workflows
    name = workflows[0].name
    assert name is not None
    versions = await side.client.workflow_versions(name)
    assert versions and all(v.name == name for v in versions)
    stamps: list[Any] = [v.created_at for v in versions]
    assert stamps == sorted(stamps, reverse=True)


# -- on-call (issue 18): pause and resume, runs backing off, retry under the current version ------------------
async def _status(side: Side, run_id: str) -> RunSummary:
    return (await side.client.get_run(run_id)).summary


async def test_a_paused_run_parks_and_goes_on_where_it_stopped_once_resumed(side: Side) -> None:
    run_id = (await side.client.open_waits())[0].run_id  # parked on an event, on both sides
    finished = next(r for r in await side.client.list_runs(limit=500) if r.status.terminal)
    with pytest.raises(Conflict):
        await side.client.pause_run(finished.run_id, reason="too late")
    with pytest.raises(Conflict):
        await side.client.resume_run(run_id)  # not paused
    with pytest.raises(WorkerError):
        await side.client.pause_run(run_id, reason="two\nlines")
    outcome = await side.client.pause_run(run_id, reason="contract", settle=5)
    assert outcome.target == run_id and outcome.runs == [run_id]

    async def parked() -> bool:
        return (await _status(side, run_id)).status == RunStatus.PAUSED

    await side.settle(parked)
    summary = await _status(side, run_id)
    assert summary.paused is not None and (summary.paused.scope, summary.paused.reason) == ("run", "contract")
    assert run_id in {r.run_id for r in await side.client.list_runs(status="paused", limit=500)}
    with pytest.raises(Conflict):
        await side.client.pause_run(run_id, reason="again")
    assert (await side.client.resume_run(run_id)).still_paused is False

    async def waiting_again() -> bool:
        s = await _status(side, run_id)
        return s.status == RunStatus.WAITING and s.paused is None

    await side.settle(waiting_again)
    with pytest.raises(Conflict):
        await side.client.resume_run(run_id)


async def test_a_paused_workflow_holds_its_runs_until_the_workflow_is_resumed(side: Side) -> None:
    run_id = (await side.client.open_waits())[0].run_id
    workflow = (await _status(side, run_id)).workflow
    outcome = await side.client.pause_workflow(workflow, reason="incident", settle=5)
    assert outcome.target == workflow and run_id in outcome.runs
    (pause,) = [p for p in await side.client.paused_workflows() if p.workflow == workflow]
    assert pause.reason == "incident" and pause.runs >= 1

    async def parked() -> bool:
        s = await _status(side, run_id)
        return s.status == RunStatus.PAUSED and s.paused is not None and s.paused.scope == "workflow"

    await side.settle(parked)
    with pytest.raises(Conflict, match="resume the workflow"):
        await side.client.resume_run(run_id)
    with pytest.raises(Conflict):
        await side.client.pause_workflow(workflow, reason="again")
    with pytest.raises(NotFound):  # a typo pauses nothing
        await side.client.pause_workflow(workflow + "-typo", reason="oops")
    await side.client.pause_run(run_id, reason="mine too")  # its own pause, on top of the workflow's
    assert (await _status(side, run_id)).paused.scope == "run"  # type: ignore[union-attr]
    assert (await side.client.resume_run(run_id)).still_paused is True
    assert (await _status(side, run_id)).paused.scope == "workflow"  # type: ignore[union-attr]
    resumed = await side.client.resume_workflow(workflow)
    assert resumed.target == workflow and run_id in resumed.runs
    assert workflow not in {p.workflow for p in await side.client.paused_workflows()}

    async def waiting_again() -> bool:
        s = await _status(side, run_id)
        return s.status == RunStatus.WAITING and s.paused is None

    await side.settle(waiting_again)
    with pytest.raises(Conflict):
        await side.client.resume_workflow(workflow)


async def test_runs_backing_off_are_listed_and_counted_as_retrying(side: Side) -> None:
    retrying = await side.client.list_runs(status="retrying", limit=500)
    assert retrying
    assert all(r.status == RunStatus.WAITING and (r.waiting_on or "").startswith("retry ") and r.error
               and r.wake_at is not None for r in retrying)
    assert await side.client.count_retrying() == len(retrying)
    waiting = {r.run_id for r in await side.client.list_runs(status="waiting", limit=500)}
    assert {r.run_id for r in retrying} <= waiting
    assert "retrying" not in await side.client.count_runs()  # a part of `waiting`, not a status of its own


async def test_filters_combine_with_and_like_the_runs_they_describe(side: Side) -> None:
    everything = await side.client.list_runs(limit=500)

    async def listed(**parts: str) -> set[str]:
        return {r.run_id for r in await side.client.list_runs(limit=500, filters=RunFilter(**parts))}

    failed = [r for r in everything if r.status is RunStatus.FAILED and r.error]
    assert failed, "each side has failed runs with an error"
    run = failed[0]
    text = (run.error or "")[2:9].upper()  # literal, case-insensitive, anywhere in the error
    with_text = {r.run_id for r in everything if r.error and text.lower() in r.error.lower()}
    assert run.run_id in with_text and await listed(error=text) == with_text
    assert await listed(workflow=run.workflow, status="failed") == {
        r.run_id for r in failed if r.workflow == run.workflow}
    assert await listed(workflow=run.workflow, status="failed", error=text) == {
        r.run_id for r in failed if r.workflow == run.workflow and r.run_id in with_text}
    assert await listed(workflow=run.workflow, status="completed", error=text) == {
        r.run_id for r in everything if r.workflow == run.workflow and r.status is RunStatus.COMPLETED
        and r.run_id in with_text}
    on_step = next(r for r in everything if r.current_step and "," not in r.current_step)
    assert on_step.run_id in await listed(step=on_step.current_step or "")
    assert all(r.current_step == on_step.current_step for r in await side.client.list_runs(
        limit=500, filters=RunFilter(step=on_step.current_step)))
    assert await listed(since="3650d") == {r.run_id for r in everything}
    assert await listed(waiting="retry") == {r.run_id for r in await side.client.list_runs(
        status="retrying", limit=500)}
    humans = {r.run_id for r in everything if r.status is RunStatus.WAITING and r.waiting_on == "human"}
    assert humans and await listed(waiting="human") == humans
    assert await listed(waiting="event") == {r.run_id for r in everything if (r.waiting_on or "").startswith("event")}
    # a person: the waiting runs with a pending task that person may decide (no approvers: anyone may)
    tasks = await side.client.list_tasks(status="pending")
    anyone = {t.run_id for t in tasks if not t.approvers}
    assert anyone and await listed(waiting="nobody-in-particular") == {
        r.run_id for r in everything if r.run_id in anyone and r.status is RunStatus.WAITING}
    # the arguments narrow the filters further (a saved view narrowed by flags)
    narrowed = await side.client.list_runs(limit=500, status="failed", filters=RunFilter(workflow=run.workflow))
    assert {r.run_id for r in narrowed} == await listed(workflow=run.workflow, status="failed")


async def test_views_are_saved_replaced_listed_and_found_by_name(side: Side) -> None:
    failing = RunFilter(status="failed", error="1 / 0")
    saved = await side.client.save_view("oncall-failing", failing)
    assert (saved.name, saved.filters) == ("oncall-failing", failing)
    assert (await side.client.get_view("oncall-failing")).filters == failing
    narrower = RunFilter(status="failed", error="1 / 0", since="1d")
    await side.client.save_view("oncall-failing", narrower)  # saved again: replaced
    await side.client.save_view("all-waiting", RunFilter(status="waiting"))
    views = await side.client.list_views()
    assert [v.name for v in views if v.name in ("all-waiting", "oncall-failing")] == ["all-waiting", "oncall-failing"]
    assert next(v for v in views if v.name == "oncall-failing").filters == narrower
    with pytest.raises(NotFound, match=r"no saved view 'nope' \(saved: .*oncall-failing"):
        await side.client.get_view("nope")
    with pytest.raises(WorkerError, match="a view name is lowercase"):
        await side.client.save_view("Bad Name", failing)
    assert "Bad Name" not in {v.name for v in await side.client.list_views()}


async def test_retry_under_the_run_s_version_or_the_current_one(side: Side) -> None:
    runs = await side.client.list_runs(limit=500)
    candidates = [r.run_id for r in runs if r.status in (RunStatus.FAILED, RunStatus.CANCELLED)]
    other = next(r for r in runs if r.status == RunStatus.COMPLETED).run_id
    options = await side.client.retry_options([*candidates, other])
    assert [o.run_id for o in options] == [*candidates, other]
    done = options[-1]
    assert not done.retryable and "not failed or cancelled" in (done.problem or "")
    same = next(o for o in options if o.retryable and not o.changed)
    assert same.compatible and same.default == "run" and same.current_version == same.run_version
    newer = next(o for o in options if o.retryable and o.changed and o.compatible)
    assert newer.default == "current" and newer.problem is None and newer.from_step is not None
    stuck = next(o for o in options if o.retryable and o.changed and not o.compatible)
    assert stuck.default == "run" and "is not in the current version" in (stuck.problem or "")

    moved = await side.client.retry(newer.run_id)
    assert (moved.version, moved.def_hash, moved.skipped) == ("current", newer.current_version, None)
    assert moved.new_run is not None
    assert (await _status(side, moved.new_run)).def_hash == newer.current_version
    own = await side.client.retry(same.run_id, "run")
    assert (own.version, own.def_hash) == ("run", same.run_version) and own.new_run is not None
    refused = await side.client.retry(stuck.run_id, "current")
    assert refused.new_run is None and refused.version is None and "cannot take it over" in (refused.skipped or "")
    fallback = await side.client.retry(stuck.run_id)  # auto: back to its own version
    assert (fallback.version, fallback.def_hash) == ("run", stuck.run_version) and fallback.new_run is not None
    finished = await side.client.retry(other)
    assert finished.new_run is None and "not failed or cancelled" in (finished.skipped or "")
    with pytest.raises(WorkerError):
        await side.client.retry(same.run_id, "newest")  # type: ignore[arg-type]


# -- limits (issue 17): limits.yaml and its use across the fleet, the workflows' budgets ----------------------
async def test_limits_report_the_file_s_limits_their_counters_and_the_fleet_s_mode(side: Side) -> None:
    report = await side.client.limits()
    assert report.file is not None and report.file.endswith("limits.yaml")
    assert report.file_error is None and report.redis_error is None
    names = [lim.name for lim in report.limits]
    assert names == sorted(names) and len(set(names)) == len(names)
    defined = {lim.name: lim for lim in report.limits if lim.defined}
    helpdesk, openai = defined["helpdesk-api"], defined["openai-gpt4o"]
    assert (helpdesk.requests, helpdesk.concurrency, helpdesk.window, helpdesk.tokens) == ("20/s", 10, "s", None)
    assert helpdesk.burst == 19 and helpdesk.match is None  # 95 % of one window
    assert (openai.requests, openai.tokens, openai.window) == ("500/min", "30000/min", "min")
    assert openai.match == {"provider": "openai", "model": "gpt-4o*"}
    for lim in report.limits:
        assert lim.defined or (lim.requests, lim.tokens, lim.concurrency) == (None, None, None)
        for value in (lim.window_requests, lim.window_tokens, lim.in_flight, lim.waiting, lim.granted,
                      lim.throttled, lim.rejected_429):
            assert value is not None and value >= 0  # Redis answers: these counters are known
        # what could go now: known once a bucket exists, and only for the rates the limit has
        assert lim.available_requests is None or 0 <= lim.available_requests <= (lim.burst or 0)
        assert lim.available_tokens is None or (lim.tokens is not None and lim.available_tokens >= 0)
    modes = {w.mode for w in report.workers if w.mode}
    assert all(w.mode in (None, "redis", "fallback") for w in report.workers)
    assert report.mode == ("unknown" if not modes else next(iter(modes)) if len(modes) == 1 else "mixed")


async def test_budgets_list_each_workflow_s_caps_and_today_s_spend(side: Side) -> None:
    budgets = await side.client.budgets()
    assert budgets and [b.workflow for b in budgets] == sorted(b.workflow for b in budgets)
    for b in budgets:
        assert b.on_exceed in ("ask", "fail")
        assert any(cap is not None for cap in (b.tokens_per_run, b.usd_per_run, b.usd_per_day))
        assert b.spent_today_usd >= 0 and b.calls_today >= 0 and b.asking >= 0
    assert any(b.usd_per_day and b.on_exceed == "fail" for b in budgets)


# -- the live text of llm/agent steps (issue 19) ---------------------------------------------------------
ANSWER = ("The refund for ticket T-1 was checked against the order: 40 EUR, paid by card on the 3rd. "
          "The policy allows refunds within 30 days, so I approved it, and the customer was told.")
ASK = """
name: ask
inputs: {llm: {type: string}}
steps:
  - id: ask
    uses: llm
    retry: {max_attempts: 3, initial_interval: 100ms}
    with: {provider: openai, model: m, base_url: "${{ inputs.llm }}", prompt: Was the refund for T-1 made?}
"""
@dataclass
class LiveSide:
    side: Side
    run_id: str
    step_id: str
    answer: str


@pytest.fixture(params=["fake", "runtime"])
async def live_side(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[LiveSide]:
    """A run whose llm step's first attempt broke off mid-answer and whose retry wrote the whole answer."""
    if request.param == "fake":
        from tests.console.fake_live import ASK_ANSWER
        from tests.console.fakes import rid

        yield LiveSide(Side(FakeRuntimeClient(), _at_once), rid(23), "ask", ASK_ANSWER)
        return
    from tests.support.llm_peer import LlmPeer, Reply, openai_text

    write_workflow(settings, "ask.yaml", ASK)
    with LlmPeer() as peer:
        peer.tokens_per_s = 60
        answer = openai_text(ANSWER, usage=(30, 44))
        peer.script([Reply(200, {}, answer, drop_after=6), answer])
        async with running_worker(settings), client_for(settings) as client:
            run_id = await client.start_run("ask", {"llm": peer.openai_url})
            yield LiveSide(Side(client, _eventually), run_id, "ask", ANSWER)


async def test_live_text_so_far_then_followed_to_the_step_s_end_with_the_abandoned_attempt_apart(
        live_side: LiveSide) -> None:
    from worker.client.live import LiveText

    client, run_id, step = live_side.side.client, live_side.run_id, live_side.step_id

    async def writing() -> bool:
        return bool(await client.live_entries(run_id))

    await live_side.side.settle(writing)
    first = await client.live_entries(run_id, count=1)
    assert len(first) == 1 and first[0].run_id == run_id and first[0].step_id == step
    rest = [e async for e in client.follow_live(run_id, after=first[0].id, step_id=step)]  # ends with the step
    whole = first + rest
    assert all(e.step_id == step for e in whole)
    ids = [tuple(map(int, e.id.split("-"))) for e in whole]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "nothing skipped or repeated after the cursor"
    assert [e.id for e in await client.live_entries(run_id)] == [e.id for e in whole]
    assert [e.id for e in await client.live_entries(run_id, after=whole[2].id)] == [e.id for e in whole[3:]]
    text = LiveText()
    for e in whole:
        text.feed(e)
    calls = text.of_step(step)
    assert [(c.attempt, c.abandoned, c.done) for c in calls] == [(1, True, False), (2, False, True)]
    assert calls[0].text and live_side.answer.startswith(calls[0].text) and calls[0].reason
    assert calls[1].text == live_side.answer and calls[1].ttft_ms is not None
    assert calls[1].output_tokens_per_s is not None
    view = next(v for v in (await client.get_run(run_id)).steps if v.step_id == step)
    assert view.status == "completed"
    with pytest.raises(WorkerError):
        await client.live_entries(run_id, after="not-an-id")
    with pytest.raises(NotFound):
        await client.live_entries("00000000-0000-4000-8000-000000000000")
