"""One attempt of one step: prepare its secrets and context, run its executor, turn what happened into an
`Outcome` the actor records. Also a step's fenced journal and the deterministic ids of tasks and child runs.

Nothing here commits events: the actor (worker/engine/actor.py) does, after the attempt returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker import runlog as ev
from worker.definitions.model import Definition
from worker.definitions.step_args import WorkflowArgs
from worker.engine.admission import admission_for
from worker.engine.commands import Start
from worker.engine.host import ActorHost
from worker.engine.inputs import InputError, resolve_inputs
from worker.engine.state import InstanceKey
from worker.errors import LeaseLost, StepFailed, StepParked, StepThrottled, WorkerError
from worker.limits.gate import StepGate, run_step_gated
from worker.limits.spec import LIMIT_KINDS, MATCHED_KINDS
from worker.secrets.transit import open_fields, seal_fields
from worker.steps.base import StepContext, idempotency_key
from worker.store import runs as store
from worker.store.definitions import active_version
from worker.store.writer import NewChild
from worker.telemetry.logging import register_step_secrets

_TASK_NS = uuid.UUID("5b0c3c38-7d4e-4a53-9d2b-0b8a4f0f6a11")
_CHILD_NS = uuid.UUID("0e7f9c1a-3b8d-4f5e-8a21-6c4d2e9b7f30")


def task_id_for(run_id: str, step_id: str, item: int | None, kind: str, attempt: int) -> str:
    return str(uuid.uuid5(_TASK_NS, f"{run_id}/{step_id}/{item}/{kind}/{attempt}"))


def parked_task_id(run_id: str, step_id: str, item: int | None, key: str) -> str:
    """The approval task of a step that parked itself with a key of its own (an agent's tool call)."""
    return str(uuid.uuid5(_TASK_NS, f"{run_id}/{step_id}/{item}/approval/{key}"))


def child_run_id_for(run_id: str, step_id: str, item: int | None) -> str:
    return str(uuid.uuid5(_CHILD_NS, f"{run_id}/{step_id}/{item}"))


@dataclass(slots=True)
class Outcome:
    """What one attempt ended with: an output, a failure, a request to park, or to wait (at most one)."""

    key: InstanceKey
    attempt: int
    output: Any = None
    failure: StepFailed | None = None
    park: StepParked | None = None
    throttle: StepThrottled | None = None
    """The step waits for capacity under a limit (not a failure: the same attempt starts again later)."""


@dataclass(frozen=True, slots=True)
class RunLease:
    """The run an attempt belongs to, as its journal needs it: who may commit, and how."""

    run_id: str
    epoch: int
    encrypt: bool
    on_lost: Callable[[], None]
    """Called when a fenced write finds the lease gone (the actor stops)."""
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    priority: str = "normal"
    """The run's priority (high | normal | low): orders its steps among those waiting for a limit."""


class FencedJournal:
    """A step's journal: entries from earlier attempts, and fenced appends (see `Journal`)."""

    def __init__(self, host: ActorHost, run: RunLease, step_id: str, item: int | None,
                 entries: dict[int, Any]) -> None:
        self.entries = entries
        self.secrets: Any = {}  # set once the step's credentials are fetched: entries are redacted
        self._host = host
        self._run = run
        self._step_id = step_id
        self._item = item

    async def record(self, call_index: int, data: Any) -> None:
        host, run = self._host, self._run
        if self.secrets:
            data = host.secrets.redact(data, self.secrets)
        stored = data
        if run.encrypt:
            holder = {"output": data}
            await seal_fields(host.cipher, [holder])
            stored = holder["output"]
        ok = await store.append_journal(host.pool, run_id=run.run_id, worker_id=host.settings.worker_id,
                                        epoch=run.epoch, step_id=self._step_id, item=self._item,
                                        call_index=call_index, data=stored)
        if not ok:
            run.on_lost()
            raise LeaseLost(run.run_id)
        self.entries[call_index] = data


async def run_attempt(host: ActorHost, defn: Definition, run: RunLease, cmd: Start,
                      context: Callable[[], dict[str, Any]]) -> Outcome:
    """Execute one attempt of `cmd`'s step; every failure becomes an Outcome (LeaseLost and cancellation
    propagate). `context` builds the expression context for secret rendering when it is needed."""
    step = defn.step(cmd.step_id)
    key = (cmd.step_id, cmd.item)
    if step.uses == "workflow":
        return await start_child(host, run.run_id, cmd)
    executor = host.executors.get(step.uses)
    if executor is None:
        return Outcome(key, cmd.attempt, failure=StepFailed(f"no executor for step kind {step.uses!r}",
                                                            retryable=False))
    timeout = defn.timeout_for(step)
    journal: FencedJournal | None = None
    decisions: dict[str, dict[str, Any]] = {}
    if getattr(executor, "uses_journal", False):
        entries = await store.load_journal(host.pool, run.run_id, cmd.step_id, cmd.item)
        holders = [{"output": v} for v in entries.values()]
        await open_fields(host.cipher, holders)
        journal = FencedJournal(host, run, cmd.step_id, cmd.item,
                                {k: h["output"] for k, h in zip(entries, holders, strict=True)})
        decisions = await store.load_step_decisions(host.pool, run.run_id, cmd.step_id, cmd.item)
    secrets: Any = {}
    args = cmd.inputs
    gate = _gate(host, defn, run.run_id, cmd, run.priority)
    try:
        args, secrets = await host.secrets.prepare(defn, step, cmd.inputs, context)
        if journal is not None:
            journal.secrets = secrets
        ctx = StepContext(
            run_id=run.run_id,  # type: ignore[arg-type]
            workflow=defn.name, step_id=cmd.step_id, item=cmd.item, attempt=cmd.attempt,
            idempotency_key=idempotency_key(run.run_id, cmd.step_id, cmd.item), timeout=timeout,
            settings=host.settings, logger=run.log, idempotent=step.idempotent, journal=journal,
            decisions=decisions, secrets=secrets,
            traceparent=host.telemetry.traceparent(
                run.run_id, cmd.step_id, cmd.item, cmd.attempt,
                in_process=not (step.uses == "python" and host.settings.python_isolation == "process")), gate=gate,
            encrypted=run.encrypt,
        )
        if secrets:  # the step's own log lines (captured per step) are redacted too
            register_step_secrets([str(v) for values in secrets.values() for v in values.values()])
        if gate is not None and step.uses not in MATCHED_KINDS and gate.matters:
            # tool, http, python: one call per attempt (llm and agent ask the gate before each LLM request)
            call = functools.partial(run_step_gated, gate, ctx.idempotency_key, functools.partial(
                executor.execute, args, ctx))
        else:
            call = functools.partial(executor.execute, args, ctx)
        if timeout is not None:
            async with asyncio.timeout(timeout):
                output = await call()
        else:
            output = await call()
    except TimeoutError:
        return Outcome(key, cmd.attempt, failure=StepFailed(f"timed out after {timeout:g}s", retryable=True))
    except StepFailed as exc:
        if secrets:
            exc = StepFailed(str(host.secrets.redact(exc.reason, secrets)), retryable=exc.retryable,
                             retry_after=exc.retry_after)
        return Outcome(key, cmd.attempt, failure=exc)
    except StepParked as exc:
        if secrets:  # what the human is shown is stored too
            exc = StepParked(exc.key, str(host.secrets.redact(exc.prompt, secrets)),
                             context=host.secrets.redact(exc.context, secrets), timeout=exc.timeout,
                             on_timeout=exc.on_timeout)
        return Outcome(key, cmd.attempt, park=exc)
    except StepThrottled as exc:
        return Outcome(key, cmd.attempt, throttle=exc)
    except (asyncio.CancelledError, LeaseLost):
        raise
    except Exception as exc:  # noqa: BLE001 - an executor bug is a retryable step failure, not a crash
        reason = f"{type(exc).__name__}: {exc}"
        if secrets:
            reason = str(host.secrets.redact(reason, secrets))
        return Outcome(key, cmd.attempt, failure=StepFailed(reason, retryable=True))
    if secrets:
        output = host.secrets.redact(output, secrets)
    return Outcome(key, cmd.attempt, output=output)


def _gate(host: ActorHost, defn: Definition, run_id: str, cmd: Start, priority: str = "normal") -> StepGate | None:
    """The attempt's pre-call gate: for the step kinds that may be limited, on a worker with a limiter."""
    limiter = getattr(host, "limiter", None)
    step = defn.step(cmd.step_id)
    if limiter is None or step.uses not in LIMIT_KINDS:
        return None
    names = ((step.limit,) if step.limit else ()) + tuple(step.limits)
    return limiter.gate(run_id=run_id, workflow=defn.name, step_id=cmd.step_id, item=cmd.item, kind=step.uses,
                        names=names, budget=defn.spec.budget, priority=priority)


async def start_child(host: ActorHost, run_id: str, cmd: Start) -> Outcome:
    """Create the child run (idempotently, deterministic id) and park on it."""
    key = (cmd.step_id, cmd.item)
    args = WorkflowArgs.model_validate(cmd.inputs)
    found = await active_version(host.pool, args.workflow)
    if found is None:
        return Outcome(key, cmd.attempt, failure=StepFailed(
            f"workflow {args.workflow!r} is not loaded (or was deleted)", retryable=False))
    def_hash, spec_json = found
    child_defn = Definition.from_json(spec_json)
    try:
        inputs = resolve_inputs(child_defn.spec, args.inputs)
        admission = await admission_for(child_defn, inputs, inherit=True, off_loop=host.off_loop)
    except (InputError, WorkerError) as exc:  # WorkerError: its concurrency key
        return Outcome(key, cmd.attempt, failure=StepFailed(f"child inputs: {exc}", retryable=False))
    child_id = child_run_id_for(run_id, cmd.step_id, cmd.item)
    return Outcome(key, cmd.attempt, output={
        "_child": NewChild(child_id, args.workflow, def_hash, inputs,
                           ev.Event(ev.RUN_CREATED, time.time(), data={"workflow": args.workflow,
                                                                       "def_hash": def_hash, "inputs": inputs,
                                                                       "parent_run_id": run_id}),
                           cmd.step_id, cmd.item, admission)})
