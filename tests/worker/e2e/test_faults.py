"""Deterministic crash points (worker.faults): each test first proves its fault fired, then that
another worker finishes the run with no lost step and no duplicate effect."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, http_chain, pending_task, write_workflow
from tests.support.services import WorkerProc, WorkerProcs
from worker.config import Settings


def armed(point: str, marker: Path, after: int = 1) -> dict[str, str]:
    return {"AGENTRT_FAULT_POINT": point, "AGENTRT_FAULT_MARKER": str(marker), "AGENTRT_FAULT_AFTER": str(after)}


async def wait_dead(proc: WorkerProc, timeout: float = 20) -> None:
    for _ in range(int(timeout * 20)):
        if not proc.alive():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {proc.name} did not crash at its fault point:\n{proc.log_tail()}")


def completions(detail) -> Counter[str]:  # type: ignore[no-untyped-def, type-arg]
    return Counter(e.step_id for e in detail.events if e.type == "step.completed")


async def test_crash_after_the_call_before_the_checkpoint(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs, tmp_path: Path) -> None:
    marker = tmp_path / "fired"
    write_workflow(settings, "chain.yaml", http_chain(4))
    doomed = worker_procs.start(extra_env=armed("after-call-before-commit", marker, after=2), name="doomed")
    async with client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        await wait_dead(doomed)
        assert marker.read_text().split() == ["after-call-before-commit"]
        assert http_sink.count("/step2") == 1  # the effect happened, its result was never committed
        worker_procs.start(name="heir")
        summary = await client.wait_for_run(run_id, timeout=40)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    assert http_sink.count("/step2") == 2 and http_sink.distinct_effects() == 4  # same key: one effect
    assert all(n == 1 for n in completions(detail).values()) and len(completions(detail)) == 4


async def test_crash_after_the_lease_before_the_stream_ack_then_during_reclaim(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs, tmp_path: Path) -> None:
    marker = tmp_path / "fired"
    write_workflow(settings, "chain.yaml", http_chain(3))
    first = worker_procs.start(extra_env=armed("after-commit-before-ack", marker), name="first")
    first.wait_for_log("worker test-first")
    async with client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        await wait_dead(first)
        # the entry is still pending for the dead consumer: the next worker reclaims it, and dies there. (Its death
        # watch would see the first worker gone first and hand the run out afresh, dropping the dead consumer:
        # the reclaim path is what workers without the liveness lock rely on, so this one runs without it.)
        second = worker_procs.start(extra_env={**armed("during-reclaim", marker), "AGENTRT_LIVENESS": "off"},
                                    name="second")
        await wait_dead(second, timeout=30)
        assert marker.read_text().split() == ["after-commit-before-ack", "during-reclaim"]
        assert http_sink.count() == 0
        worker_procs.start(name="third")
        summary = await client.wait_for_run(run_id, timeout=40)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    assert http_sink.count() == 3 and http_sink.distinct_effects() == 3
    assert all(n == 1 for n in completions(detail).values())


async def test_crash_right_after_reading_an_approval_decision(
        settings: Settings, worker_procs: WorkerProcs, tmp_path: Path) -> None:
    marker = tmp_path / "fired"
    write_workflow(settings, "gate.yaml", """
        name: gate
        steps:
          - {id: ask, uses: approval, with: {prompt: "go?"}}
          - {id: after, uses: set, with: {done: true}}
    """)
    doomed = worker_procs.start(extra_env=armed("after-decision-before-commit", marker), name="doomed")
    async with client_for(settings) as client:
        run_id = await client.start_run("gate")
        task = await pending_task(client, run_id)
        await client.decide(task.task_id, approve=True, by="ann", reason="yes")
        await wait_dead(doomed)
        assert marker.read_text().split() == ["after-decision-before-commit"]
        worker_procs.start(name="heir")
        summary = await client.wait_for_run(run_id, timeout=40)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    decided = [e for e in detail.events if e.type == "task.decided"]
    assert len(decided) == 1 and decided[0].data["by"] == "ann"
    assert detail.steps[0].output["approved"] is True
