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
from worker.config import Settings
from worker.errors import Conflict, NotFound, WorkerError
from worker.models import RunStatus, TaskStatus

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
}


@pytest.fixture(params=["fake", "runtime"])
async def side(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Side]:
    if request.param == "fake":
        yield Side(FakeRuntimeClient(), _at_once)
        return
    for name, text in SEEDED.items():
        write_workflow(settings, name, text)
    async with running_worker(settings), client_for(settings) as client:
        for workflow in ("done", "broken", "gate", "reply"):
            await client.start_run(workflow)

        async def seeded() -> bool:
            statuses = {r.workflow: r.status.value for r in await client.list_runs()}
            tasks = await client.list_tasks(status="pending")
            return (statuses.get("done") == "completed" and statuses.get("broken") == "failed" and bool(tasks)
                    and bool(await client.open_waits()) and bool(await client.list_schedules()))

        await _eventually(seeded)
        yield Side(client, _eventually)


async def test_listing_filters_and_orders_runs(side: Side) -> None:
    everything = await side.client.list_runs(limit=500)
    assert everything, "each side has runs"
    newest_first = [r.created_at for r in everything]
    assert newest_first == sorted(newest_first, reverse=True)
    assert [r.created_at for r in await side.client.list_runs(limit=500, order="oldest")] == newest_first[::-1]
    assert len(await side.client.list_runs(limit=1)) == 1
    counts = await side.client.count_runs()
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
