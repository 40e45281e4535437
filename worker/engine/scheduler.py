"""decide(definition, state, now) -> Decision: which steps are ready and what happens next.

Pure: no awaits, no clock, no randomness (time arrives as `now`). The runner applies the events
for the returned commands and calls `decide` again until it returns only starts (or nothing).
"""

from __future__ import annotations

from typing import Any

from worker.definitions.expressions import render, truthy
from worker.definitions.model import Definition
from worker.definitions.schema import StepSpec
from worker.engine.commands import (
    Command,
    Complete,
    CompleteRun,
    Decision,
    Expand,
    Fail,
    FailRun,
    Skip,
    Start,
    TimeoutTask,
    TimeoutWait,
)
from worker.engine.state import Instance, RunState
from worker.errors import ExpressionError
from worker.models import StepStatus
from worker.secrets.deferred import DeferredSecrets

_DONE = (StepStatus.COMPLETED, StepStatus.SKIPPED)
_TERMINAL = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.CANCELLED)


def expression_context(defn: Definition, state: RunState) -> dict[str, Any]:
    """The names `${{ }}` expressions see: inputs, steps.<id>.output/status, run, secrets.

    `secrets` holds no value: each `secrets.<name>.<key>` renders to an inert marker, so the inputs
    stored in the event log never contain a secret. The step's SecretProvider renders those
    positions again, from the definition, when the step runs (worker.secrets.deferred).
    """
    steps: dict[str, Any] = {}
    for step_id, st in state.steps.items():
        if st.status in _TERMINAL:
            steps[step_id] = {"output": st.output, "status": st.status.value, "error": st.error}
    return {
        "inputs": state.inputs,
        "steps": steps,
        "run": {"id": state.run_id, "workflow": defn.name, "version": defn.def_hash[:12]},
        "secrets": DeferredSecrets(),
    }


def _when(step: StepSpec, ctx: dict[str, Any]) -> bool:
    cond = step.when
    if cond is None:
        return True
    if isinstance(cond, bool):
        return cond
    text = cond.strip()
    if "${{" not in text:
        text = "${{ " + text + " }}"
    return truthy(render(text, ctx))


def _deps_done(defn: Definition, state: RunState, step_id: str) -> bool:
    for dep in defn.needs[step_id]:
        st = state.steps.get(dep)
        if st is None:
            return False
        if st.status in _DONE:
            continue
        if st.status == StepStatus.FAILED and defn.step(dep).continue_on_error:
            continue
        return False
    return True


def _waiting(inst: Instance, now: float, wake: list[float]) -> Command | None:
    """What a parked instance needs now: its outcome once decided/fired, or nothing yet."""
    wait = inst.wait or {}
    reason = wait.get("reason")
    decision = inst.decision
    if reason == "sleep":
        wake_at = float(wait.get("wake_at") or 0.0)
        if now >= wake_at:
            return Complete(inst.step_id, inst.item, {"slept_until": wake_at})
        wake.append(wake_at)
        return None
    if reason == "throttled":
        # waiting for capacity under a limit: the same attempt starts again at its turn (no attempt burnt)
        wake_at = float(wait.get("wake_at") or 0.0)
        if now >= wake_at:
            return Start(inst.step_id, inst.item, inst.attempt, "", inst.inputs)
        wake.append(wake_at)
        return None
    if reason == "event":
        if decision is not None:
            if decision.get("received"):
                return Complete(inst.step_id, inst.item, {"received": True, "event": decision.get("event")})
            return Complete(inst.step_id, inst.item, {"received": False})
        deadline = wait.get("deadline")
        if deadline is not None:
            if now >= float(deadline):
                return TimeoutWait(inst.step_id, inst.item)
            wake.append(float(deadline))
        return None
    if reason == "child":
        if decision is None:
            return None
        if decision.get("status") == "completed":
            return Complete(inst.step_id, inst.item, decision.get("output"))
        return Fail(inst.step_id, inst.item,
                    f"child run {decision.get('child_run_id')} {decision.get('status')}: {decision.get('error')}",
                    inst.attempt)
    if reason == "approval" and wait.get("resume"):
        # raised by the step itself (StepParked): any decision (or the timeout) resumes the step, which
        # reads the decision from its context
        if decision is None:
            deadline = wait.get("deadline")
            if deadline is not None:
                if now >= float(deadline):
                    return TimeoutTask(inst.step_id, inst.item, str(wait.get("task_id")))
                wake.append(float(deadline))
            return None
        return Start(inst.step_id, inst.item, inst.attempt + 1, "", inst.inputs)
    if reason == "approval":
        if decision is None:
            deadline = wait.get("deadline")
            if deadline is not None:
                if now >= float(deadline):
                    return TimeoutTask(inst.step_id, inst.item, str(wait.get("task_id")))
                wake.append(float(deadline))
            return None
        status = decision.get("status")
        by, reason_text = decision.get("by"), decision.get("reason")
        if status == "timed_out":
            action = wait.get("on_timeout", "reject")
            if action == "approve":
                return Complete(inst.step_id, inst.item,
                                {"approved": True, "decided_by": None, "timed_out": True, "reason": None})
            return Fail(inst.step_id, inst.item, f"approval timed out (on_timeout: {action})", inst.attempt)
        if status == "approved":
            return Complete(inst.step_id, inst.item,
                            {"approved": True, "decided_by": by, "reason": reason_text, "timed_out": False})
        return Fail(inst.step_id, inst.item, f"rejected by {by}: {reason_text or 'no reason given'}", inst.attempt)
    if reason == "uncertain":
        if decision is None:
            return None
        action = decision.get("action")
        if action == "done":
            return Complete(inst.step_id, inst.item, decision.get("output"))
        if action == "retry":
            return Start(inst.step_id, inst.item, inst.attempt + 1, "", inst.inputs)
        return Fail(inst.step_id, inst.item,
                    f"marked failed by {decision.get('by')} after an uncertain outcome: "
                    f"{decision.get('reason') or 'no reason given'}", inst.attempt)
    return None


def _instance_commands(defn: Definition, step: StepSpec, inst: Instance, ctx: dict[str, Any], now: float,
                       wake: list[float]) -> Command | None:
    if inst.status == StepStatus.PENDING:
        return _start(step, inst, 1, ctx)
    if inst.status == StepStatus.RETRYING:
        retry_at = inst.retry_at or 0.0
        if now >= retry_at:
            return _start(step, inst, inst.attempt + 1, ctx)
        wake.append(retry_at)
        return None
    if inst.status == StepStatus.WAITING:
        cmd = _waiting(inst, now, wake)
        if isinstance(cmd, Start):  # uncertain -> retry, resume after a decision or a throttle: same inputs and key
            return Start(cmd.step_id, cmd.item, cmd.attempt, step.uses, cmd.inputs)
        return cmd
    return None


def _start(step: StepSpec, inst: Instance, attempt: int, ctx: dict[str, Any]) -> Command:
    if inst.item is not None:
        ctx = {**ctx, "item": ctx["_items"][inst.item], "index": inst.item}
    try:
        inputs = render(step.with_, ctx)
    except ExpressionError as exc:
        return Fail(step.id, inst.item, f"cannot render inputs: {exc}", attempt)
    return Start(step.id, inst.item, attempt, step.uses, inputs)


def decide(defn: Definition, state: RunState, now: float) -> Decision:
    """Commands that move the run forward from `state` at time `now`."""
    if state.terminal:
        return Decision()
    commands: list[Command] = []
    wake: list[float] = []
    ctx: dict[str, Any] | None = None
    all_terminal = True
    for step_id in defn.order:
        step = defn.step(step_id)
        st = state.steps.get(step_id)
        status = st.status if st is not None else StepStatus.PENDING
        if status in _TERMINAL:
            if status == StepStatus.FAILED and not step.continue_on_error:
                return Decision([FailRun(f"step {step_id} failed: {st.error if st else ''}", step_id)])
            continue
        all_terminal = False
        if not _deps_done(defn, state, step_id):
            continue
        if ctx is None:
            ctx = expression_context(defn, state)
        if status == StepStatus.PENDING and (st is None or st.count is None):
            # first time ready: condition, then (for foreach) expansion
            try:
                run_it = _when(step, ctx)
            except ExpressionError as exc:
                commands.append(Fail(step_id, None, f"when: {exc}"))
                continue
            if not run_it:
                commands.append(Skip(step_id, "when condition is false"))
                continue
            if step.foreach is not None:
                try:
                    items = render(step.foreach, ctx)
                except ExpressionError as exc:
                    commands.append(Fail(step_id, None, f"foreach: {exc}"))
                    continue
                if not isinstance(items, list):
                    commands.append(Fail(step_id, None, f"foreach must give a list, got {type(items).__name__}"))
                    continue
                commands.append(Expand(step_id, len(items)))
                continue
        if st is not None and st.count is not None:
            commands.extend(_foreach_commands(defn, step, state, ctx, now, wake))
            continue
        inst = state.instances.get((step_id, None)) or Instance(step_id, None)
        cmd = _instance_commands(defn, step, inst, ctx, now, wake)
        if cmd is not None:
            commands.append(cmd)
    if all_terminal and not commands:
        return Decision([_finish(defn, state)])
    return Decision(commands, min(wake) if wake else None)


def _foreach_commands(defn: Definition, step: StepSpec, state: RunState, ctx: dict[str, Any], now: float,
                      wake: list[float]) -> list[Command]:
    st = state.steps[step.id]
    count = st.count or 0
    out: list[Command] = []
    outputs: list[Any] = []
    done = True
    item_ctx: dict[str, Any] | None = None
    for index in range(count):
        inst = state.instances.get((step.id, index)) or Instance(step.id, index)
        if inst.status == StepStatus.FAILED:
            return [Fail(step.id, None, f"item {index}: {inst.error}")]
        if inst.status == StepStatus.COMPLETED:
            outputs.append(inst.output)
            continue
        done = False
        if inst.status in (StepStatus.PENDING, StepStatus.RETRYING) and item_ctx is None:
            try:
                items = render(step.foreach, ctx)
            except ExpressionError as exc:
                return [Fail(step.id, None, f"foreach: {exc}")]
            item_ctx = {**ctx, "_items": items}
        cmd = _instance_commands(defn, step, inst, item_ctx or ctx, now, wake)
        if isinstance(cmd, Fail):
            return [cmd]  # one failed item fails the step: render no more items, start none of them
        if cmd is not None:
            out.append(cmd)
    if done:
        return [Complete(step.id, None, outputs)]
    return out


def _finish(defn: Definition, state: RunState) -> Command:
    ctx = expression_context(defn, state)
    if defn.spec.output is not None:
        try:
            return CompleteRun(render(defn.spec.output, ctx))
        except ExpressionError as exc:
            return FailRun(f"output: {exc}")
    last = state.steps.get(defn.order[-1])
    return CompleteRun(last.output if last is not None else None)
