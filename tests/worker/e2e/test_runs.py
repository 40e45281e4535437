"""End to end with a real worker in-process: real Postgres, Redis and an HTTP peer."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.http_sink import HttpSink
from tests.support.runtime import (
    client_for,
    eventually,
    http_chain,
    pending_task,
    running_worker,
    wait_status,
    write_workflow,
)
from worker.client import RuntimeClient
from worker.config import Settings
from worker.errors import Conflict, NotFound, WorkerError


async def test_ten_step_workflow_completes_with_one_effect_per_step(settings: Settings, http_sink: HttpSink) -> None:
    write_workflow(settings, "chain.yaml", http_chain(10))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        summary = await client.wait_for_run(run_id, timeout=30)
        assert summary.status.value == "completed", summary.error
        detail = await client.get_run(run_id)
    assert http_sink.count() == 10
    assert http_sink.distinct_effects() == 10
    keys = http_sink.keys()
    assert all(k.startswith(f"agentrt:{run_id}:s") for k in keys)
    assert [s.status.value for s in detail.steps] == ["completed"] * 10
    assert detail.output["path"] == "/step10" and detail.output["key"] == f"agentrt:{run_id}:s10"
    # the event log is ordered: each step starts only after its predecessor's completion is committed
    types = [(e.type, e.step_id) for e in detail.events]
    for i in range(1, 10):
        assert types.index(("step.completed", f"s{i}")) < types.index(("step.started", f"s{i + 1}"))


async def test_retries_with_backoff_keep_the_same_idempotency_key(settings: Settings, http_sink: HttpSink) -> None:
    http_sink.script("/step1", [(500, {}, "down"), (503, {}, "still down")])
    write_workflow(settings, "chain.yaml", http_chain(1))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    assert http_sink.count("/step1") == 3
    assert len(set(http_sink.keys("/step1"))) == 1
    attempts = detail.steps[0].attempts
    assert [a.status for a in attempts] == ["failed", "failed", "completed"]
    assert "500" in (attempts[0].error or "")


async def test_poison_step_stops_at_max_attempts_and_fails_the_run(settings: Settings) -> None:
    write_workflow(settings, "poison.yaml", """
        name: poison
        steps:
          - id: bad
            uses: python
            retry: {max_attempts: 3, initial_interval: 50ms}
            with: {function: "tests.support.wf_funcs:always_fail"}
          - {id: never, uses: set, with: {x: 1}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("poison")
        summary = await client.wait_for_run(run_id, timeout=20)
        detail = await client.get_run(run_id)
    assert summary.status.value == "failed"
    assert "poison" in (summary.error or "")
    bad, never = detail.steps
    assert len(bad.attempts) == 3
    assert never.status.value == "pending" and never.attempts == ()


async def test_step_timeout_is_a_retryable_failure(settings: Settings) -> None:
    write_workflow(settings, "slow.yaml", """
        name: slow
        steps:
          - id: nap
            uses: python
            timeout: 200ms
            retry: {max_attempts: 2, initial_interval: 10ms}
            with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 5}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        started = time.monotonic()
        run_id = await client.start_run("slow")
        summary = await client.wait_for_run(run_id, timeout=20)
        elapsed = time.monotonic() - started
        detail = await client.get_run(run_id)
    assert summary.status.value == "failed"
    assert [a.error for a in detail.steps[0].attempts] == ["timed out after 0.2s"] * 2
    assert elapsed < 4


async def test_approval_approve_then_second_decision_conflicts(settings: Settings) -> None:
    write_workflow(settings, "ok.yaml", """
        name: ok
        inputs: {amount: {type: number}}
        steps:
          - id: ask
            uses: approval
            when: "${{ inputs.amount > 100 }}"
            with: {prompt: "Refund ${{ inputs.amount }}?", context: {amount: "${{ inputs.amount }}"}}
          - {id: pay, uses: set, with: {paid: "${{ inputs.amount }}"}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        small = await client.start_run("ok", {"amount": 10})
        big = await client.start_run("ok", {"amount": 500})
        assert (await client.wait_for_run(small, timeout=20)).status.value == "completed"
        task = await pending_task(client, big)
        assert task.prompt == "Refund 500?" and task.context == {"amount": 500}
        await wait_status(client, big, "waiting")
        assert (await client.get_run(big)).summary.waiting_on == "human"
        decided = await client.decide(task.task_id, approve=True, by="alice", reason="looks fine")
        assert decided.status.value == "approved" and decided.decided_by == "alice"
        with pytest.raises(Conflict, match="already approved by alice"):
            await client.decide(task.task_id, approve=False, by="bob", reason="no")
        summary = await client.wait_for_run(big, timeout=20)
        detail = await client.get_run(big)
    assert summary.status.value == "completed"
    assert detail.steps[0].output["approved"] is True
    assert detail.output == {"paid": 500}


async def test_rejection_needs_a_reason_and_fails_the_run(settings: Settings) -> None:
    write_workflow(settings, "gate.yaml", """
        name: gate
        steps:
          - {id: ask, uses: approval, with: {prompt: "ship it?"}}
          - {id: ship, uses: set, with: {shipped: true}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("gate")
        task = await pending_task(client, run_id)
        with pytest.raises(WorkerError, match="reason"):
            await client.decide(task.task_id, approve=False, by="bob")
        await client.decide(task.task_id, approve=False, by="bob", reason="not today")
        summary = await client.wait_for_run(run_id, timeout=20)
    assert summary.status.value == "failed"
    assert "rejected by bob: not today" in (summary.error or "")


async def test_approval_timeout_applies_on_timeout(settings: Settings) -> None:
    write_workflow(settings, "t.yaml", """
        name: t
        steps:
          - {id: ask, uses: approval, with: {prompt: "?", timeout: 500ms, on_timeout: approve}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("t")
        summary = await client.wait_for_run(run_id, timeout=20)
        detail = await client.get_run(run_id)
        tasks = await client.list_tasks(status=None, run_id=run_id)
    assert summary.status.value == "completed"
    assert detail.steps[0].output["timed_out"] is True
    assert tasks[0].status.value == "timed_out"


async def test_cancel_interrupts_a_running_step(settings: Settings) -> None:
    write_workflow(settings, "long.yaml", """
        name: long
        steps:
          - {id: nap, uses: python, with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 60}}}
          - {id: after, uses: set, with: {x: 1}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("long")
        await wait_status(client, run_id, "running")
        await eventually(lambda: _step_running(client, run_id, "nap"), what="nap running")
        started = time.monotonic()
        await client.cancel(run_id, by="carol", reason="wrong input")
        summary = await client.wait_for_run(run_id, timeout=10)
        detail = await client.get_run(run_id)
        with pytest.raises(Conflict):
            await client.cancel(run_id)
    assert summary.status.value == "cancelled"
    assert "carol" in (summary.error or "")
    assert time.monotonic() - started < 5
    assert detail.steps[0].status.value == "cancelled"
    assert detail.steps[1].attempts == ()


async def _step_running(client, run_id: str, step: str) -> bool:  # type: ignore[no-untyped-def]
    detail = await client.get_run(run_id)
    return any(s.step_id == step and s.status.value == "running" for s in detail.steps)


async def test_foreach_runs_items_in_parallel_and_collects_outputs(settings: Settings, http_sink: HttpSink) -> None:
    write_workflow(settings, "fe.yaml", """
        name: fe
        inputs: {sink: {type: string}, ids: {type: array}}
        steps:
          - id: fetch
            uses: http
            foreach: "${{ inputs.ids }}"
            with: {url: "${{ inputs.sink }}/item/${{ item }}"}
          - id: count
            uses: set
            with: {n: "${{ len(steps.fetch.output) }}", first: "${{ steps.fetch.output[0].json.path }}"}
    """)
    for i in range(5):
        http_sink.set_delay(f"/item/{i}", 0.3)
    async with running_worker(settings), client_for(settings) as client:
        started = time.monotonic()
        run_id = await client.start_run("fe", {"sink": http_sink.url, "ids": list(range(5))})
        summary = await client.wait_for_run(run_id, timeout=20)
        elapsed = time.monotonic() - started
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    assert detail.output == {"n": 5, "first": "/item/0"}
    assert elapsed < 1.4  # five 0.3 s calls ran concurrently
    keys = set(http_sink.keys())
    assert keys == {f"agentrt:{run_id}:fetch[{i}]" for i in range(5)}


async def test_child_workflow_result_flows_to_the_parent(settings: Settings) -> None:
    write_workflow(settings, "child.yaml", """
        name: child
        inputs: {n: {type: integer}}
        steps:
          - {id: double, uses: set, with: {v: "${{ inputs.n * 2 }}"}}
    """)
    write_workflow(settings, "parent.yaml", """
        name: parent
        steps:
          - {id: kid, uses: workflow, with: {workflow: child, inputs: {n: 21}}}
          - {id: use, uses: set, with: {answer: "${{ steps.kid.output.v }}"}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("parent")
        summary = await client.wait_for_run(run_id, timeout=20)
        detail = await client.get_run(run_id)
        child = await client.get_run(detail.children[0])
    assert summary.status.value == "completed", summary.error
    assert detail.output == {"answer": 42}
    assert child.summary.parent_run_id == run_id and child.summary.status.value == "completed"


async def test_durable_sleep_parks_the_run_and_wakes_it(settings: Settings) -> None:
    write_workflow(settings, "nap.yaml", """
        name: nap
        steps:
          - {id: z, uses: sleep, with: {duration: 4s}}
          - {id: after, uses: set, with: {woke: true}}
    """)
    async with running_worker(settings) as service, client_for(settings) as client:
        run_id = await client.start_run("nap")
        await wait_status(client, run_id, "waiting")
        # parked: no worker holds it while it sleeps
        await eventually(lambda: _no_lease(client, run_id), what="lease released")
        assert run_id not in service.actors
        summary = await client.wait_for_run(run_id, timeout=20)
    assert summary.status.value == "completed"


async def _no_lease(client, run_id: str) -> bool:  # type: ignore[no-untyped-def]
    return await client.pool.fetchval("SELECT lease_owner IS NULL FROM runs WHERE run_id = $1", run_id)


async def test_unknown_workflow_and_bad_inputs_are_clear_errors(settings: Settings) -> None:
    write_workflow(settings, "typed.yaml", """
        name: typed
        inputs: {n: {type: integer}}
        steps: [{id: a, uses: set, with: {}}]
    """)
    async with running_worker(settings), client_for(settings) as client:
        with pytest.raises(NotFound, match="no active workflow named 'nope'"):
            await client.start_run("nope")
        with pytest.raises(WorkerError, match="must be integer"):
            await client.start_run("typed", {"n": "x"})
        with pytest.raises(WorkerError, match="missing required input 'n'"):
            await client.start_run("typed", {})


async def test_hot_reload_pins_running_runs_and_keeps_last_good_version(settings: Settings) -> None:
    v1 = """
        name: hot
        steps:
          - {id: gate, uses: approval, with: {prompt: "v1"}}
          - {id: out, uses: set, with: {version: 1}}
    """
    path = write_workflow(settings, "hot.yaml", v1)
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start_run("hot")
        task = await pending_task(client, first)
        write_workflow(settings, "hot.yaml", v1.replace("version: 1", "version: 2").replace('"v1"', '"v2"'))

        async def reloaded() -> bool:
            wfs = {w.name: w for w in await client.list_workflows()}
            return wfs["hot"].versions == 2

        t0 = time.monotonic()
        await eventually(reloaded, timeout=5, interval=0.05, what="v2 loaded")
        assert time.monotonic() - t0 < 1.5
        second = await client.start_run("hot")
        # an invalid save keeps v2 active and reports where the problem is
        path.write_text("name: hot\nsteps:\n  - id: gate\n    uses: teleport\n")

        async def invalid() -> bool:
            wfs = {w.path: w for w in await client.list_workflows()}
            return wfs[str(path)].status == "invalid"

        await eventually(invalid, timeout=5, interval=0.05, what="invalid reported")
        info = {w.path: w for w in await client.list_workflows()}[str(path)]
        assert info.error_line == 4 and "teleport" in (info.error or "")
        third = await client.start_run("hot")
        for rid in (first, second, third):
            t = await pending_task(client, rid)
            await client.decide(t.task_id, approve=True, by="ops")
        outs = [(await client.wait_for_run(r, timeout=20), (await client.get_run(r)).output)
                for r in (first, second, third)]
        assert [o for _, o in outs] == [{"version": 1}, {"version": 2}, {"version": 2}]
        assert task.prompt == "v1"
        # deleting the file stops new runs
        path.unlink()

        async def deleted() -> bool:
            wfs = {w.path: w for w in await client.list_workflows()}
            return wfs[str(path)].status == "deleted"

        await eventually(deleted, timeout=5, interval=0.05, what="deleted")
        with pytest.raises(NotFound):
            await client.start_run("hot")


async def test_worker_survives_an_invalid_file_at_startup(settings: Settings) -> None:
    write_workflow(settings, "broken.yaml", "name: broken\nsteps: [\n")
    write_workflow(settings, "fine.yaml", "name: fine\nsteps: [{id: a, uses: set, with: {x: 1}}]\n")
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("fine")
        assert (await client.wait_for_run(run_id, timeout=10)).status.value == "completed"
        wfs = {w.path.rsplit("/", 1)[-1]: w for w in await client.list_workflows()}
    assert wfs["broken.yaml"].status == "invalid" and wfs["broken.yaml"].error_line is not None
    assert wfs["fine.yaml"].status == "active"


async def test_workers_listing_shows_the_live_worker(settings: Settings) -> None:
    async with running_worker(settings) as service, client_for(settings) as client:
        await asyncio.sleep(0.2)
        workers = await client.list_workers()
    assert [w.worker_id for w in workers if w.alive] == [service.settings.worker_id]


async def test_shared_tools_file_is_validated_on_save_and_cleared_when_fixed(settings: Settings) -> None:
    write_workflow(settings, "fine.yaml", "name: fine\nsteps: [{id: a, uses: set, with: {x: 1}}]\n")
    tools = settings.workflows_dir / "tools.yaml"
    async with running_worker(settings), client_for(settings) as client:
        await eventually(lambda: _has_workflow(client, "fine"), timeout=10, interval=0.05, what="fine loaded")
        tools.write_text("servers:\n  rec:\n    transport: carrier-pigeon\n")

        async def reported() -> bool:
            return str(tools) in {w.path for w in await client.list_workflows() if w.status == "invalid"}

        await eventually(reported, timeout=5, interval=0.05, what="invalid tools.yaml reported")
        info = {w.path: w for w in await client.list_workflows()}[str(tools)]
        assert info.error_line is not None and info.name is None
        tools.write_text("servers:\n  rec:\n    command: python3\n")

        async def cleared() -> bool:
            return str(tools) not in {w.path for w in await client.list_workflows()}

        await eventually(cleared, timeout=5, interval=0.05, what="the error cleared after the fix")
        run_id = await client.start_run("fine")  # workflows were never disturbed
        assert (await client.wait_for_run(run_id, timeout=10)).status.value == "completed"


async def _has_workflow(client: RuntimeClient, name: str) -> bool:
    return name in {w.name for w in await client.list_workflows()}


async def test_a_list_output_is_stored_whole(settings: Settings) -> None:
    """A run whose output is a list (a foreach as the last step) keeps the whole list, not its first item."""
    write_workflow(settings, "listed.yaml", """
        name: listed
        steps:
          - {id: each, uses: set, foreach: "${{ [1, 2, 3] }}", with: {x: "${{ item }}"}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("listed")
        await wait_status(client, run_id, "completed")
        assert (await client.get_run(run_id)).output == [{"x": 1}, {"x": 2}, {"x": 3}]
        assert [r.run_id for r in await client.list_runs(workflow="listed")] == [run_id]
