"""What starting one step instance means, as a pure function the RunActor applies (`plan_start`).

A step's arguments are validated by its kind's model first (refused: started and failed at once, final). A
`sleep`, `approval` or `wait` step parks (worker/engine/parking.py); a `workflow` step starts a child run; every
other kind is launched in an executor after the commit, with its stable idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker import runlog as ev
from worker.definitions.model import Definition
from worker.definitions.step_args import ARGS_MODELS
from worker.engine.commands import Start
from worker.engine.parking import PARKING_KINDS, park
from worker.steps.base import idempotency_key
from worker.store.writer import NewTask, NewWait


@dataclass(slots=True)
class StartPlan:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(type, data) of the events to emit, in order (step, item and attempt are the command's)."""
    task: NewTask | None = None
    wait: NewWait | None = None
    launch: bool = False
    """Run it in an executor once the commit is done (a child run is created there too)."""


def plan_start(defn: Definition, cmd: Start, *, run_id: str, now: float, event_lookback: float) -> StartPlan:
    kind = defn.step(cmd.step_id).uses
    model = ARGS_MODELS.get(kind)
    try:
        args = model.model_validate(cmd.inputs) if model is not None else None
    except Exception as exc:  # noqa: BLE001 - pydantic ValidationError: a final, readable failure
        return _refused(cmd, f"invalid arguments: {short(exc)}")
    if kind in PARKING_KINDS:
        parking = park(kind, args, run_id=run_id, step_id=cmd.step_id, item=cmd.item, attempt=cmd.attempt,
                       inputs=cmd.inputs, now=now, event_lookback=event_lookback)
        if parking.waiting is None:
            return _refused(cmd, parking.error or "refused")
        return StartPlan([(ev.STEP_WAITING, parking.waiting)], parking.task, parking.wait)
    # a child's version is looked up before the commit (the actor's launch)
    key = None if kind == "workflow" else idempotency_key(run_id, cmd.step_id, cmd.item)
    return StartPlan([(ev.STEP_STARTED, {"inputs": cmd.inputs, "key": key})], launch=True)


def _refused(cmd: Start, error: str) -> StartPlan:
    return StartPlan([(ev.STEP_STARTED, {"inputs": cmd.inputs, "key": None}),
                      (ev.STEP_FAILED, {"error": error, "retryable": False, "final": True})])


def short(exc: Exception) -> str:
    text = str(exc).replace("\n", "; ")
    return text[:500]
