"""Scale-out: several worker processes share the work, a killed one's runs move to the others, and a
SIGTERMed one finishes its in-flight step and exits cleanly.

What is observed: `runs.lease_owner`, sampled while the runs execute (the worker driving a run holds its
lease), and the `run.resumed` events that a taking-over worker writes (with its id and the previous owner).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, eventually, http_chain, write_workflow
from tests.support.services import WorkerProcs
from worker.config import Settings


def _completed_per_step(events: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter((e.step_id, e.item) for e in events if e.type == "step.completed")


async def test_three_workers_share_30_runs_and_a_killed_ones_runs_move(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    steps = 4
    for i in range(1, steps + 1):
        http_sink.set_delay(f"/step{i}", 0.4)
    write_workflow(settings, "chain.yaml", http_chain(steps))
    # 12 runs at most per worker: 30 runs need all three, however the stream entries are handed out
    procs = [worker_procs.start(extra_env={"AGENTRT_CONCURRENCY": "12"}, name=n) for n in ("a", "b", "c")]
    for p in procs:
        p.wait_for_log(f"worker test-{p.name}", timeout=30)
    first_owner: dict[str, str] = {}
    async with client_for(settings) as client:
        runs = [await client.start_run("chain", {"sink": http_sink.url}) for _ in range(30)]

        async def sample() -> bool:
            for r in await client.pool.fetch(
                    "SELECT run_id::text, lease_owner FROM runs WHERE lease_owner IS NOT NULL"):
                first_owner.setdefault(r["run_id"], r["lease_owner"])
            return len({o.split("-")[1] for o in first_owner.values()}) == 3

        await eventually(sample, timeout=30, interval=0.05, what="all three workers holding runs")
        busiest = await client.pool.fetchval(
            "SELECT lease_owner FROM runs WHERE lease_owner IS NOT NULL "
            "GROUP BY lease_owner ORDER BY count(*) DESC LIMIT 1")
        victim = next(p for p in procs if busiest.startswith(f"test-{p.name}-"))
        victim.kill()
        # the dead worker's rows stay as they are until its leases expire: this is what must move
        held = {str(r["run_id"]) for r in await client.pool.fetch(
            "SELECT run_id FROM runs WHERE lease_owner = $1 AND status NOT IN ('completed', 'failed')", busiest)}
        summaries = [await client.wait_for_run(run_id, timeout=90) for run_id in runs]
        per_run_events = {run_id: list((await client.get_run(run_id)).events) for run_id in runs}
        workers = {r["worker_id"]: r["held_runs"] for r in await client.pool.fetch(
            "SELECT worker_id, held_runs FROM workers")}
    assert all(s.status.value == "completed" for s in summaries), [s.error for s in summaries]
    spread = Counter(o.split("-")[1] for o in first_owner.values())
    assert set(spread) == {"a", "b", "c"} and max(spread.values()) <= 12, spread
    assert len(workers) == 3
    # the victim's unfinished runs were resumed by a survivor, from their last committed step
    assert held, "the killed worker held no unfinished run"
    for run_id in held:
        resumed = [e for e in per_run_events[run_id] if e.type == "run.resumed"]
        assert resumed and resumed[-1].data["worker"].split("-")[1] != victim.name, resumed
        assert resumed[-1].data["previous_owner"] == busiest
    for events in per_run_events.values():
        assert all(n == 1 for n in _completed_per_step(events).values())
        assert len(_completed_per_step(events)) == steps
    assert http_sink.distinct_effects() == 30 * steps  # retries of in-flight calls reuse their key
    assert all(p.alive() for p in procs if p is not victim)


async def test_sigterm_mid_step_finishes_the_step_and_exits_cleanly(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    """Current behaviour (stop(grace=10s)): a SIGTERMed worker stops taking work, lets its runs go on
    for up to 10 s, exits 0, and no call it made is repeated; what is left is resumed elsewhere."""
    http_sink.set_delay("/step1", 1.5)
    write_workflow(settings, "chain.yaml", http_chain(3))
    w = worker_procs.start(name="term")
    w.wait_for_log("worker test-term")
    async with client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        assert await http_sink.wait_for_async(lambda s: s.count("/step1") >= 1, 20)
        signalled = time.monotonic()
        code = await asyncio.to_thread(w.stop, 20.0)
        took = time.monotonic() - signalled
        worker_procs.start(name="heir")  # finishes whatever the first one handed back
        summary = await client.wait_for_run(run_id, timeout=30)
        events = list((await client.get_run(run_id)).events)
        stopped = await client.pool.fetchval(
            "SELECT stopped_at IS NOT NULL FROM workers WHERE worker_id LIKE 'test-term-%'")
    assert code == 0, w.log_tail()
    assert took < 12.0
    assert summary.status.value == "completed"
    assert http_sink.count("/step1") == 1  # the in-flight call finished; it was not sent again
    assert all(n == 1 for n in _completed_per_step(events).values())
    assert stopped is True
    assert "stopped" in w.log_text()


async def test_sigterm_hands_runs_back_instead_of_starting_new_steps(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    http_sink.set_delay("/step1", 2.0)
    write_workflow(settings, "chain.yaml", http_chain(3))
    # a long lease: if the stopping worker did not hand the run back, nobody could take it for 60 s
    w = worker_procs.start(extra_env={"AGENTRT_LEASE_TTL": "60", "AGENTRT_HEARTBEAT_INTERVAL": "1"}, name="term")
    w.wait_for_log("worker test-term")
    async with client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        assert await http_sink.wait_for_async(lambda s: s.count("/step1") >= 1, 20)
        code = await asyncio.to_thread(w.stop, 20.0)
        exited = time.monotonic()
        worker_procs.start(name="heir")  # started only now, so the run was surely on the first worker
        # well before the first worker's 60 s lease would have expired: it was handed back
        summary = await client.wait_for_run(run_id, timeout=20)
        events = list((await client.get_run(run_id)).events)
    assert code == 0
    assert summary.status.value == "completed"
    assert http_sink.count("/step1") == 1  # finished during the grace period, not repeated
    assert all(n == 1 for n in _completed_per_step(events).values())
    later = [r for r in http_sink.requests if r.path in ("/step2", "/step3")]
    assert len(later) == 2 and all(r.at > exited for r in later)  # the stopping worker started no new step
