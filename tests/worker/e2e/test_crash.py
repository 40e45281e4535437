"""Crash, takeover, zombie and outage tests with real worker processes (kill -9, SIGSTOP) and real servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, eventually, http_chain, pending_task, write_workflow
from tests.support.services import OwnServices, WorkerProcs, create_migrated_database, worker_environment
from worker.config import Settings


async def _events(client, run_id: str) -> list:  # type: ignore[no-untyped-def]
    return list((await client.get_run(run_id)).events)


def _completed_per_step(events: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(e.step_id for e in events if e.type == "step.completed")


async def test_kill9_mid_run_resumes_without_repeating_completed_steps(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    for i in range(1, 11):
        http_sink.set_delay(f"/step{i}", 0.15)
    write_workflow(settings, "chain.yaml", http_chain(10))
    first = worker_procs.start(name="first")
    first.wait_for_log("worker test-first")
    async with client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count() >= 4, 20)
        first.kill()
        killed_at = http_sink.count()
        second = worker_procs.start(name="second")
        summary = await client.wait_for_run(run_id, timeout=40)
        events = await _events(client, run_id)
    assert summary.status.value == "completed", summary.error
    assert second.alive()
    assert http_sink.distinct_effects() == 10
    per_key = Counter(http_sink.keys())
    repeated = [k for k, n in per_key.items() if n > 1]
    # at most the one call that was in flight at the kill is sent again, with the same key
    assert len(repeated) <= 1 and all(n <= 2 for n in per_key.values())
    assert 4 <= killed_at < 10
    assert all(n == 1 for n in _completed_per_step(events).values())
    assert len(_completed_per_step(events)) == 10
    resumed = [e for e in events if e.type == "run.resumed"]
    assert len(resumed) == 1 and resumed[0].data["worker"].startswith("test-second")


async def test_killed_workers_runs_move_to_the_survivor(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    for i in range(1, 6):
        http_sink.set_delay(f"/step{i}", 0.3)
    write_workflow(settings, "chain.yaml", http_chain(5))
    a = worker_procs.start(name="a")
    b = worker_procs.start(name="b")
    a.wait_for_log("worker test-a")
    b.wait_for_log("worker test-b")
    async with client_for(settings) as client:
        runs = [await client.start_run("chain", {"sink": http_sink.url}) for _ in range(8)]

        async def both_busy() -> bool:
            owners = await client.pool.fetch(
                "SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT NULL")
            return len(owners) == 2

        await eventually(both_busy, timeout=20, what="both workers holding runs")
        held_by_a = {str(r["run_id"]) for r in await client.pool.fetch(
            "SELECT run_id FROM runs WHERE lease_owner LIKE 'test-a-%' AND status <> 'completed'")}
        a.kill()
        for run_id in runs:
            summary = await client.wait_for_run(run_id, timeout=60)
            assert summary.status.value == "completed", summary.error
        moved = 0
        for run_id in held_by_a:
            events = await _events(client, run_id)
            if any(e.type == "run.resumed" and e.data["worker"].startswith("test-b") for e in events):
                moved += 1
            assert all(n == 1 for n in _completed_per_step(events).values())
    assert held_by_a and moved == len(held_by_a)
    assert b.alive()
    assert http_sink.distinct_effects() == 8 * 5


async def test_zombie_worker_cannot_commit_after_takeover(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    http_sink.set_delay("/step3", 1.5)
    write_workflow(settings, "chain.yaml", http_chain(5))
    zombie = worker_procs.start(name="zombie")
    zombie.wait_for_log("worker test-zombie")
    async with client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        # freeze the worker while its call to step3 is in flight: it holds the lease but makes no progress
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count("/step3") >= 1, 20)
        zombie.sigstop()
        heir = worker_procs.start(name="heir")
        summary = await client.wait_for_run(run_id, timeout=40)
        assert summary.status.value == "completed"
        before = await _events(client, run_id)
        zombie.sigcont()
        # the zombie wakes up, gets step3's answer and tries to commit: fencing refuses it
        await asyncio.to_thread(zombie.wait_for_log, "lease lost", 15)
        await asyncio.sleep(1.0)
        after = await _events(client, run_id)
    assert [e.seq for e in after] == [e.seq for e in before]
    assert all(n == 1 for n in _completed_per_step(after).values())
    assert http_sink.distinct_effects() == 5
    assert zombie.alive() and heir.alive()


async def test_redis_flush_mid_run_loses_no_run(
        settings: Settings, own_services: OwnServices, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    import redis as redis_sync

    redis = own_services.redis()
    settings = replace(settings, redis_url=redis.url())
    write_workflow(settings, "nap.yaml", """
        name: nap
        inputs: {sink: {type: string}}
        steps:
          - {id: before, uses: http, with: {url: "${{ inputs.sink }}/before"}}
          - {id: z, uses: sleep, with: {duration: 2s}}
          - {id: after, uses: http, with: {url: "${{ inputs.sink }}/after"}}
    """)
    worker = worker_procs.start(extra_env=worker_environment(settings), name="w")
    worker.wait_for_log("worker test-w")
    async with client_for(settings) as client:
        runs = [await client.start_run("nap", {"sink": http_sink.url}) for _ in range(5)]
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count("/before") >= 5, 20)
        redis_sync.Redis.from_url(redis.url()).flushall()
        late = [await client.start_run("nap", {"sink": http_sink.url}) for _ in range(2)]
        redis_sync.Redis.from_url(redis.url()).flushall()  # also loses the late runs' work entries
        for run_id in runs + late:
            summary = await client.wait_for_run(run_id, timeout=40)
            assert summary.status.value == "completed", summary.error
    assert worker.alive()
    assert http_sink.distinct_effects("/after") == 7


async def test_postgres_restart_mid_run_worker_survives(
        settings: Settings, own_services: OwnServices, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    pg = own_services.postgres()
    url = await asyncio.to_thread(create_migrated_database, pg, "agentrt")
    settings = replace(settings, database_url=url)
    for i in range(1, 9):
        http_sink.set_delay(f"/step{i}", 0.2)
    write_workflow(settings, "chain.yaml", http_chain(8))
    worker = worker_procs.start(extra_env=worker_environment(settings), name="w")
    worker.wait_for_log("worker test-w")
    async with client_for(settings) as client:
        runs = [await client.start_run("chain", {"sink": http_sink.url}) for _ in range(3)]
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count() >= 6, 20)
        await client.close()
        await asyncio.to_thread(pg.restart, 1.5)
    async with client_for(settings) as client:
        for run_id in runs:
            summary = await client.wait_for_run(run_id, timeout=60)
            assert summary.status.value == "completed", summary.error
            assert all(n == 1 for n in _completed_per_step(await _events(client, run_id)).values())
    assert worker.alive()
    assert http_sink.distinct_effects() == 3 * 8


async def test_non_idempotent_call_in_flight_at_a_crash_asks_a_human(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    http_sink.set_delay("/charge", 2.0)
    write_workflow(settings, "pay.yaml", """
        name: pay
        inputs: {sink: {type: string}}
        steps:
          - id: charge
            uses: http
            idempotent: false
            with: {method: POST, url: "${{ inputs.sink }}/charge", json: {amount: 10}}
          - {id: receipt, uses: set, with: {charged: "${{ steps.charge.output.status }}"}}
    """)
    first = worker_procs.start(name="first")
    first.wait_for_log("worker test-first")
    async with client_for(settings) as client:
        run_id = await client.start_run("pay", {"sink": http_sink.url})
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count("/charge") >= 1, 20)
        first.kill()
        worker_procs.start(name="second")
        task = await pending_task(client, run_id, timeout=30)
        assert task.kind == "uncertain" and "charge" in task.prompt
        assert task.context["idempotency_key"] == f"agentrt:{run_id}:charge"
        assert http_sink.count("/charge") == 1  # not retried blindly
        await client.resolve(task.task_id, action="done", output={"status": 200}, by="ops", reason="seen in Stripe")
        summary = await client.wait_for_run(run_id, timeout=20)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    assert detail.output == {"charged": 200}
    assert http_sink.count("/charge") == 1


async def test_uncertain_retry_reuses_the_idempotency_key(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    http_sink.set_delay("/charge", 2.0)
    write_workflow(settings, "pay.yaml", """
        name: pay
        inputs: {sink: {type: string}}
        steps:
          - {id: charge, uses: http, idempotent: false, with: {method: POST, url: "${{ inputs.sink }}/charge"}}
    """)
    first = worker_procs.start(name="first")
    first.wait_for_log("worker test-first")
    async with client_for(settings) as client:
        run_id = await client.start_run("pay", {"sink": http_sink.url})
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count("/charge") >= 1, 20)
        first.kill()
        http_sink.set_delay("/charge", 0.0)
        worker_procs.start(name="second")
        task = await pending_task(client, run_id, timeout=30)
        await client.resolve(task.task_id, action="retry", by="ops")
        summary = await client.wait_for_run(run_id, timeout=20)
    assert summary.status.value == "completed"
    assert http_sink.count("/charge") == 2 and http_sink.distinct_effects("/charge") == 1
