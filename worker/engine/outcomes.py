"""What the actor records, as pure functions: no I/O, no clock (time and randomness arrive as arguments).

- `record_outcome`: what an attempt's `Outcome` becomes: a completion, a child run to wait for, a failure (with
  its retry time, from the step's policy), an approval the step asked for (`StepParked`), or a wait for
  capacity under a limit (`StepThrottled`: waiting, not failing; the same attempt starts again at `wake_at`).
- `command_event`: the event of a decision that needs no I/O (skip, expand, complete, fail, complete the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker import runlog as ev
from worker.definitions.model import Definition
from worker.engine.attempt import Outcome, parked_task_id, task_id_for
from worker.engine.commands import Command, Complete, CompleteRun, Expand, Fail, Skip
from worker.engine.parking import SignalEvent
from worker.engine.retry import next_retry_at
from worker.engine.state import RunState
from worker.store.writer import NewChild, NewTask


@dataclass(slots=True)
class Recorded:
    """The event that records an outcome, and what commits with it."""

    event: SignalEvent
    task: NewTask | None = None
    child: NewChild | None = None
    note: str | None = None
    """A line for the run's log (a failed attempt, and when it is retried)."""


def record_outcome(defn: Definition, state: RunState, run_id: str, outcome: Outcome, *, now: float,
                   rand: float) -> Recorded:
    step_id, item = outcome.key
    attempt = outcome.attempt
    if outcome.park is not None:  # first: a parked step has neither output nor failure
        p = outcome.park
        task_id = (task_id_for(run_id, step_id, item, "approval", 0) if not p.key
                   else parked_task_id(run_id, step_id, item, p.key))
        deadline = now + p.timeout if p.timeout else None
        task = NewTask(task_id, step_id, item, "approval", p.prompt, p.context, deadline, p.on_timeout, task_key=p.key)
        return Recorded(SignalEvent(ev.STEP_WAITING, step_id, item, attempt, {
            "reason": "approval", "resume": True, "task_id": task_id, "deadline": deadline,
            "on_timeout": p.on_timeout, "prompt": p.prompt, "key": p.key}), task=task)
    if outcome.throttle is not None:
        t = outcome.throttle
        return Recorded(SignalEvent(ev.STEP_WAITING, step_id, item, attempt, {
            "reason": "throttled", "limit": t.limit, "wake_at": t.wake_at, "next_slot_in": round(t.next_slot_in, 3),
            "cause": t.reason}))
    if outcome.failure is None:
        out = outcome.output
        if isinstance(out, dict) and isinstance(out.get("_child"), NewChild):
            child: NewChild = out["_child"]
            return Recorded(SignalEvent(ev.STEP_WAITING, step_id, item, attempt, {
                "reason": "child", "child_run_id": child.run_id, "workflow": child.workflow}), child=child)
        return Recorded(SignalEvent(ev.STEP_COMPLETED, step_id, item, attempt, {"output": out}))
    failure = outcome.failure
    policy = defn.retry_for(defn.step(step_id))
    failures = state.instance(step_id, item).failures + 1
    retry_at = next_retry_at(policy, failures, now, rand, retryable=failure.retryable, retry_after=failure.retry_after)
    note = (f"step {step_id} attempt {attempt} failed: {failure.reason}"
            + ("" if retry_at is None else f" (retry in {retry_at - now:.2f}s)"))
    return Recorded(SignalEvent(ev.STEP_FAILED, step_id, item, attempt, {
        "error": failure.reason, "retryable": failure.retryable, "retry_at": retry_at, "final": retry_at is None}),
        note=note)


def command_event(cmd: Command, state: RunState) -> SignalEvent | None:
    """The event a Skip, Expand, Complete, Fail or CompleteRun decision commits (None for other commands)."""
    data: dict[str, Any]
    if isinstance(cmd, Skip):
        return SignalEvent(ev.STEP_SKIPPED, cmd.step_id, None, None, {"reason": cmd.reason})
    if isinstance(cmd, Expand):
        return SignalEvent(ev.STEP_EXPANDED, cmd.step_id, None, None, {"count": cmd.count})
    if isinstance(cmd, Complete):
        inst = state.instances.get((cmd.step_id, cmd.item))
        return SignalEvent(ev.STEP_COMPLETED, cmd.step_id, cmd.item, inst.attempt if inst is not None else None,
                           {"output": cmd.output})
    if isinstance(cmd, Fail):
        data = {"error": cmd.error, "retryable": False, "final": True}
        return SignalEvent(ev.STEP_FAILED, cmd.step_id, cmd.item, cmd.attempt, data)
    if isinstance(cmd, CompleteRun):
        return SignalEvent(ev.RUN_COMPLETED, None, None, None, {"output": cmd.output})
    return None
