"""Concurrency keys end to end (real Postgres, Redis and a worker): at most `limit` runs per key value are
active, the others are `queued` and start in order; cancel_newest and cancel_oldest; visibility."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.flow import keyed_workflow, overlaps, run_intervals, start_order
from tests.support.runtime import client_for, eventually, pending_task, running_worker, wait_status, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings
from worker.errors import WorkerError

GATED = """
name: gated
inputs: {customer: {type: string}, n: {type: integer, default: 0}}
concurrency: {key: "${{ inputs.customer }}", limit: 1}
steps:
  - {id: ask, uses: approval, with: {prompt: "go?"}}
  - {id: done, uses: set, with: {n: "${{ inputs.n }}"}}
"""


async def test_100_runs_over_5_keys_with_limit_1_never_overlap_and_all_complete(settings: Settings) -> None:
    write_workflow(settings, "keyed.yaml", keyed_workflow(limit=1, seconds=0.05))
    async with running_worker(settings), client_for(settings) as client:
        ids = [await client.start_run("keyed", {"customer": str(i % 5)}) for i in range(100)]
        queued = await client.list_runs(status="queued", limit=500)
        summaries = [await client.wait_for_run(run_id, timeout=120) for run_id in ids]
        intervals = await run_intervals(client, ids)
        order = await start_order(client, ids)
    assert all(s.status.value == "completed" for s in summaries), [s.error for s in summaries if s.error]
    assert queued, "no run was ever queued"
    assert {s.concurrency_key for s in summaries} == {f"cust-{i}" for i in range(5)}
    assert sum(len(v) for v in intervals.values()) == 100
    assert overlaps(intervals) == []
    # within a key, runs start in creation order
    for i in range(5):
        of_key = [run_id for run_id in order if run_id in ids[i::5]]
        assert of_key == ids[i::5]


async def test_limit_2_admits_two_at_once(settings: Settings) -> None:
    write_workflow(settings, "keyed.yaml", keyed_workflow(limit=2, seconds=0.3))
    async with running_worker(settings), client_for(settings) as client:
        ids = await client.start_runs("keyed", [{"customer": "a"}] * 6)
        statuses = [(await client.get_run(r)).summary.status.value for r in ids]
        assert statuses.count("queued") == 4, statuses
        for run_id in ids:
            assert (await client.wait_for_run(run_id, timeout=60)).status.value == "completed"
        intervals = await run_intervals(client, ids)
    assert overlaps(intervals, limit=2) == []
    assert overlaps(intervals, limit=1), "two runs of the key never ran at once"


async def test_queued_runs_are_visible_cancellable_and_start_by_priority_then_creation(settings: Settings) -> None:
    write_workflow(settings, "gated.yaml", GATED)
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start("gated", {"customer": "customer-7"})
        assert first.status == "pending"
        await pending_task(client, first.run_id)
        later = [await client.start("gated", {"customer": "customer-7", "n": n}, priority=p)
                 for n, p in enumerate(["low", "normal", "normal", "high"], start=1)]
        other = await client.start("gated", {"customer": "someone-else"})  # another key is not held up
        assert [s.status for s in later] == ["queued"] * 4 and other.status == "pending"
        low, normal1, normal2, high = (s.run_id for s in later)
        detail = await client.get_run(normal2)
        assert detail.queue is not None and detail.summary.priority == "normal"
        assert detail.queue.describe() == "queued: 2 ahead for key customer-7 (limit 1, 1 active)"
        assert {r.run_id for r in await client.list_runs(status="queued")} == set(s.run_id for s in later)
        rc, out, err = await agentrt(settings, "show", normal2[:8])
        assert rc == 0 and "queued: 2 ahead for key customer-7 (limit 1, 1 active)" in out, err
        rc, out, _ = await agentrt(settings, "runs", "--status", "queued", "--json")
        listed = json.loads(out)
        assert rc == 0 and {r["run_id"] for r in listed} == set(s.run_id for s in later)
        assert {r["concurrency_key"] for r in listed} == {"customer-7"}
        assert {r["priority"] for r in listed} == {"low", "normal", "high"}
        # a queued run is cancelled at once (no worker holds it), audited
        cancelled = await client.cancel(normal1, reason="not needed")
        assert cancelled.status.value == "cancelled"
        assert (await client.get_run(normal2)).queue.ahead == 1  # type: ignore[union-attr]
        for run_id in (first.run_id, high, normal2, low):  # each in turn holds the key: approve it
            task = await pending_task(client, run_id)
            await client.decide(task.task_id, approve=True, by="alice")
            await wait_status(client, run_id, "completed", timeout=30)
        order = await start_order(client, [first.run_id, low, normal2, high])
        records = await client.audit_records(run_id=normal1)
    assert order == [first.run_id, high, normal2, low]  # priority first, then creation order
    assert [r.action for r in records] == ["cancel"]
    events = [e.type for e in (await _events(settings, normal1))]
    assert events == ["run.created", "run.cancelled"]


async def _events(settings: Settings, run_id: str) -> list:  # type: ignore[type-arg]
    async with client_for(settings) as client:
        return list((await client.get_run(run_id)).events)


async def test_cancel_newest_cancels_the_new_run_with_a_clear_reason(settings: Settings) -> None:
    write_workflow(settings, "keyed.yaml", keyed_workflow(limit=1, seconds=1.5, on_full="cancel_newest"))
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start("keyed", {"customer": "c7"})
        second = await client.start("keyed", {"customer": "c7"})
        third = await client.start("keyed", {"customer": "c8"})
        assert (first.status, second.status, third.status) == ("pending", "cancelled", "pending")
        done = await client.wait_for_run(first.run_id, timeout=30)
        refused = await client.wait_for_run(second.run_id, timeout=5)
        after = await client.start("keyed", {"customer": "c7"})  # the key is free again
        assert (await client.wait_for_run(after.run_id, timeout=30)).status.value == "completed"
    assert done.status.value == "completed"
    assert refused.status.value == "cancelled"
    assert refused.error == ("concurrency key 'cust-c7' of keyed is full (1 active, limit 1; on_full: cancel_newest)")
    assert after.status == "pending"


async def test_cancel_oldest_cancels_the_oldest_audited_and_the_new_run_takes_its_slot(settings: Settings) -> None:
    write_workflow(settings, "keyed.yaml", keyed_workflow(limit=1, seconds=60, on_full="cancel_oldest"))
    async with running_worker(settings), client_for(settings) as client:
        old = await client.start("keyed", {"customer": "c7"})
        await eventually(lambda: _started(client, old.run_id), what="the old run's step started")
        new = await client.start("keyed", {"customer": "c7"})
        assert new.status == "queued"  # until the old run's end frees the slot: never two at once
        ended = await client.wait_for_run(old.run_id, timeout=30)
        await wait_status(client, new.run_id, "running", timeout=30)
        records = await client.audit_records(run_id=old.run_id)
        intervals = await run_intervals(client, [old.run_id, new.run_id])
        await client.cancel(new.run_id)
    assert ended.status.value == "cancelled"
    assert ended.error is not None and "cancelled by system:concurrency" in ended.error
    assert "cancel_oldest" in ended.error and new.run_id in ended.error
    assert [(r.actor, r.action) for r in records] == [("system:concurrency", "cancel")]
    assert records[0].decision == {"new_run": new.run_id}
    assert overlaps(intervals) == []


async def _started(client, run_id: str) -> bool:  # type: ignore[no-untyped-def]
    return any(e.type == "step.started" for e in (await client.get_run(run_id)).events)


async def test_the_slot_belongs_to_the_run_a_parked_run_keeps_it(settings: Settings) -> None:
    """A run waiting on a human holds its key's slot (it is active); releasing it on its end starts the next."""
    write_workflow(settings, "gated.yaml", GATED)
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start_run("gated", {"customer": "k"})
        task = await pending_task(client, first)
        second = await client.start_run("gated", {"customer": "k"})
        await asyncio.sleep(1.0)  # several reconciler passes: nothing admits it while the first waits
        assert (await client.get_run(second)).summary.status.value == "queued"
        await client.decide(task.task_id, approve=False, reason="no", by="alice")
        assert (await client.wait_for_run(first, timeout=30)).status.value == "failed"
        await pending_task(client, second)  # admitted when the first one's end committed


async def test_a_key_that_does_not_render_refuses_the_start(settings: Settings) -> None:
    write_workflow(settings, "bad-key.yaml", """
        name: bad-key
        inputs: {customer: {type: any}}
        concurrency: {key: "${{ inputs.customer }}", limit: 1}
        steps:
          - {id: a, uses: set, with: {x: 1}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        ok = await client.start("bad-key", {"customer": 42})  # an integer is a key
        assert (await client.wait_for_run(ok.run_id, timeout=30)).concurrency_key == "42"
        with pytest.raises(WorkerError, match="must render to a string or an integer, not list"):
            await client.start_run("bad-key", {"customer": [1, 2]})
        with pytest.raises(WorkerError, match="at most 256 are allowed"):
            await client.start_run("bad-key", {"customer": "x" * 257})
        with pytest.raises(WorkerError, match="printable"):
            await client.start_run("bad-key", {"customer": "a\nb"})
        with pytest.raises(WorkerError, match="unknown priority 'urgent'"):
            await client.start_run("bad-key", {"customer": "a"}, priority="urgent")
        assert await client.list_runs(workflow="bad-key") == [await client.wait_for_run(ok.run_id)]


async def test_runs_started_by_events_are_admitted_under_their_key(settings: Settings) -> None:
    write_workflow(settings, "on-ticket.yaml", """
        name: on-ticket
        on: {event: {name: ticket.created}}
        inputs: {customer: {type: any}}
        concurrency: {key: "${{ inputs.customer }}", limit: 1}
        steps:
          - {id: ask, uses: approval, with: {prompt: "go?"}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        first = await client.send_event("ticket.created", data={"customer": "c1"})
        second = await client.send_event("ticket.created", data={"customer": "c1"})
        refused = await client.send_event("ticket.created", data={"customer": {"not": "a key"}})
        statuses = [(await client.get_run(d.started[0])).summary.status.value for d in (first, second)]
        assert statuses[0] in ("pending", "running", "waiting") and statuses[1] == "queued"
        assert refused.started == () and "concurrency key" in refused.refused[0]["reason"]
        await pending_task(client, first.started[0])
        await client.cancel(first.started[0])
        await pending_task(client, second.started[0])  # admitted when the first one's end committed
        await client.cancel(second.started[0])
