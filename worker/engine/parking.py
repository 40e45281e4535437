"""Steps that wait, as pure functions the RunActor applies: no I/O, no clock (time arrives as `now`).

- `park`: what starting a `sleep`, `approval` or `wait` step means: its step.waiting event data, and the
  human task or event wait to register with that commit.
- `signal_events`: the events that record what was decided outside (a task decision, a finished child,
  an event that resumed a wait or a deadline that closed it) for the instances still waiting on it.
  It also records a pause or its end (run.paused / run.unpaused) when the runs row says so.
- `orphan_events`: after a takeover, what becomes of the attempts that were in flight on the lost worker
  (retried, or, for a non-idempotent external call, a human asked whether its effect happened);
  `interrupted_events`: the same for the attempts `agentrt pause --now` interrupted.
- `run_update`: what the `runs` row says about the run (status, current step, what it waits on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker import runlog as ev
from worker.definitions.model import Definition
from worker.definitions.schema import EXTERNAL_KINDS
from worker.engine.attempt import task_id_for
from worker.engine.retry import next_retry_at
from worker.engine.state import Instance, RunState
from worker.models import StepStatus
from worker.steps.base import idempotency_key
from worker.store.runs import Signals
from worker.store.writer import NewTask, NewWait, RunUpdate

PARKING_KINDS = frozenset({"sleep", "approval", "wait"})
"""Kinds whose start parks the instance at once (no executor runs)."""


@dataclass(slots=True)
class Parking:
    waiting: dict[str, Any] | None = None
    """The step.waiting event's data; None when the arguments were refused (`error`)."""
    error: str | None = None
    task: NewTask | None = None
    wait: NewWait | None = None


def park(kind: str, args: Any, *, run_id: str, step_id: str, item: int | None, attempt: int, inputs: Any,
         now: float, event_lookback: float) -> Parking:
    """Start a `sleep`, `approval` or `wait` step: park it (validated `args` of its kind)."""
    if kind == "sleep":
        wake_at = now + (args.duration or 0.0)
        if args.until:
            try:
                wake_at = datetime.fromisoformat(args.until).timestamp()
            except ValueError:
                return Parking(error=f"until: {args.until!r} is not an ISO-8601 time")
        return Parking({"reason": "sleep", "wake_at": wake_at, "inputs": inputs})
    if kind == "approval":
        task_id = task_id_for(run_id, step_id, item, "approval", attempt)
        deadline = now + args.timeout if args.timeout else None
        task = NewTask(task_id, step_id, item, "approval", args.prompt, args.context, deadline, args.on_timeout,
                       approvers=list(args.approvers), min_approvals=args.min_approvals,
                       forbid_requester=args.forbid_requester)
        return Parking({"reason": "approval", "task_id": task_id, "deadline": deadline, "on_timeout": args.on_timeout,
                        "prompt": args.prompt, "inputs": inputs}, task=task)
    if kind == "wait":
        deadline = now + args.timeout if args.timeout is not None else None
        lookback = args.lookback if args.lookback is not None else event_lookback
        wait = NewWait(step_id, item, attempt, args.event, args.key, now - lookback, deadline)
        return Parking({"reason": "event", "event": args.event, "key": args.key, "deadline": deadline,
                        "inputs": inputs}, wait=wait)
    raise ValueError(f"step kind {kind!r} does not park")


@dataclass(frozen=True, slots=True)
class SignalEvent:
    type: str
    step_id: str | None
    item: int | None
    attempt: int | None
    data: dict[str, Any] = field(default_factory=dict)


def signal_events(state: RunState, sig: Signals) -> list[SignalEvent]:
    """Events for the signals that answer an instance still waiting for exactly that (stale ones are ignored).

    Child payloads must be opened (decrypted) by the caller first."""
    waiting = {k: i for k, i in state.instances.items() if i.status == StepStatus.WAITING and i.decision is None}
    out: list[SignalEvent] = []
    for t in sig.tasks:
        inst = waiting.get((t["step_id"], t["item"]))
        if inst is None or (inst.wait or {}).get("task_id") != str(t["task_id"]):
            continue
        decision = t["decision"] or {}
        out.append(SignalEvent(ev.TASK_DECIDED, inst.step_id, inst.item, inst.attempt, {
            "task_id": str(t["task_id"]), "status": t["status"], "by": t["decided_by"], "reason": t["reason"],
            "action": decision.get("action"), "output": decision.get("output")}))
    for c in sig.children:
        inst = waiting.get((c["parent_step"], c["parent_item"]))
        if inst is None or (inst.wait or {}).get("child_run_id") != str(c["run_id"]):
            continue
        out.append(SignalEvent(ev.CHILD_FINISHED, inst.step_id, inst.item, inst.attempt, {
            "child_run_id": str(c["run_id"]), "status": c["status"], "output": c["output"], "error": c["error"]}))
    for w in sig.waits:
        inst = waiting.get((w["step_id"], w["item"]))
        if inst is None or (inst.wait or {}).get("reason") != "event" or inst.attempt != w["attempt"]:
            continue
        data = {"received": True, "event": w["event"]} if w["received"] else {"received": False, "timed_out": True}
        out.append(SignalEvent(ev.EVENT_RECEIVED, inst.step_id, inst.item, inst.attempt, data))
    if sig.pause is not None and state.paused is None:
        out.append(SignalEvent(ev.RUN_PAUSED, None, None, None, dict(sig.pause)))
    elif sig.pause is None and state.paused is not None:
        out.append(SignalEvent(ev.RUN_UNPAUSED, None, None, None, {}))
    return out


@dataclass(slots=True)
class Orphans:
    events: list[SignalEvent] = field(default_factory=list)
    """run.resumed first, then one per orphaned attempt."""
    tasks: list[NewTask] = field(default_factory=list)


def orphan_events(defn: Definition, state: RunState, *, now: float, worker: str, epoch: int,
                  previous_owner: str | None) -> Orphans:
    """After a takeover: a retry for every attempt in flight that may run again, an `uncertain` task for
    each non-idempotent external call (did its effect happen?)."""
    out = Orphans()
    orphans = state.running_instances()
    if previous_owner is None and not orphans:
        return out
    out.events.append(SignalEvent(ev.RUN_RESUMED, None, None, None, {
        "worker": worker, "epoch": epoch, "previous_owner": previous_owner, "orphans": len(orphans)}))
    for inst in orphans:
        _lost(out, defn, state, inst, now, error=f"worker lost during attempt {inst.attempt}",
              why="was in flight when its worker was lost")
    return out


def interrupted_events(defn: Definition, state: RunState, insts: list[Instance], *, now: float,
                       by: str) -> Orphans:
    """`agentrt pause --now` cancelled these attempts mid-flight: retried on resume like a lost worker's
    (a non-idempotent external call asks a human whether its effect happened)."""
    out = Orphans()
    for inst in insts:
        _lost(out, defn, state, inst, now, error=f"interrupted by pause --now ({by}) during attempt {inst.attempt}",
              why=f"was interrupted by a pause --now ({by})", mark="interrupted")
    return out


def _lost(out: Orphans, defn: Definition, state: RunState, inst: Instance, now: float, *, error: str,
          why: str, mark: str = "crashed") -> None:
    step = defn.step(inst.step_id)
    if step.idempotent or step.uses not in EXTERNAL_KINDS:
        retry_at = next_retry_at(defn.retry_for(step), inst.failures + 1, now, 0.0, retryable=True)
        out.events.append(SignalEvent(ev.STEP_FAILED, inst.step_id, inst.item, inst.attempt, {
            "error": error, mark: True, "retryable": True,
            "retry_at": now if retry_at is not None else None, "final": retry_at is None}))
        return
    task_id = task_id_for(state.run_id, inst.step_id, inst.item, "uncertain", inst.attempt)
    prompt = (f"Step '{inst.step_id}' ({step.uses}, idempotent: false) {why}. "
              f"Did its effect happen? retry / mark done / fail")
    out.tasks.append(NewTask(task_id, inst.step_id, inst.item, "uncertain", prompt,
                             {"inputs": inst.inputs, "attempt": inst.attempt,
                              "idempotency_key": idempotency_key(state.run_id, inst.step_id, inst.item)},
                             None, None))
    out.events.append(SignalEvent(ev.STEP_WAITING, inst.step_id, inst.item, inst.attempt,
                                  {"reason": "uncertain", "task_id": task_id}))


def run_update(state: RunState, defn: Definition | None = None) -> RunUpdate:
    """The run row: status, up to three current steps, and what a parked run waits on.

    A run backing off between attempts waits on `retry N/M` (N: the next attempt, M: its step's max_attempts,
    when `defn` is known), with its last error and the time of the next attempt (`wake_at`)."""
    if state.terminal:
        return RunUpdate(status=state.status.value, output=state.output, error=state.error, finished=True)
    running = [i for i in state.instances.values() if i.status == StepStatus.RUNNING]
    waiting = [i for i in state.instances.values() if i.status in (StepStatus.WAITING, StepStatus.RETRYING)]
    active = running or waiting
    current = ",".join(sorted({i.step_id for i in active})[:3]) or None
    waiting_on = None
    last_error: str | None = None
    retry_at: float | None = None
    for inst in waiting:
        reason = (inst.wait or {}).get("reason") if inst.status == StepStatus.WAITING else "retry"
        if reason == "retry":
            last_error = inst.error
            retry_at = inst.retry_at if retry_at is None or (inst.retry_at or 0) < retry_at else retry_at
            if defn is not None and inst.step_id in defn.needs:
                reason = f"retry {inst.attempt + 1}/{defn.retry_for(defn.step(inst.step_id)).max_attempts}"
        if reason in ("approval", "uncertain"):
            waiting_on = "human"
            break
        if reason == "event":
            wait = inst.wait or {}
            key = wait.get("key")
            reason = f"event {wait.get('event')}" + ("" if key is None else f" key {key}")
        elif reason == "throttled":
            wait = inst.wait or {}
            reason = f"throttled: {wait.get('limit')} (next slot in {float(wait.get('next_slot_in') or 0):.1f}s)"
        waiting_on = reason
    status = "running" if running or not waiting else "waiting"
    if state.paused is not None and not running:
        status = "paused"
    if running:
        waiting_on, last_error, retry_at = None, None, None
    return RunUpdate(status=status, current_step=current, waiting_on=waiting_on, error=last_error,
                     wake_at=retry_at if waiting_on and waiting_on.startswith("retry") else None)
