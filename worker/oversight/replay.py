"""Replay and fork: a new run, linked to the original, that reuses committed outputs up to a step.

Steps that neither are the `--from` step nor depend on it (transitively), and that completed or were
skipped in the original, are reused: their committed events are copied into the new run's log, so
the engine treats them as done and never calls anything for them. Everything else runs again, with
new idempotency keys (the new run has its own id: they are new effects).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from worker import runlog as ev
from worker.definitions.model import Definition
from worker.definitions.schema import EXTERNAL_KINDS
from worker.engine.admission import admission_for
from worker.engine.inputs import resolve_inputs
from worker.engine.state import RunState
from worker.errors import NotFound, WorkerError
from worker.models import StepStatus
from worker.secrets.transit import PayloadCipher, open_fields, seal_fields
from worker.store import runs as store
from worker.store.concurrency import Admission, Admitted
from worker.store.definitions import active_version, load_spec

_REUSABLE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


@dataclass(frozen=True, slots=True)
class ExternalCall:
    step_id: str
    kind: str
    detail: str
    items: int | None = None  # foreach: how many calls


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    source_run: str
    workflow: str
    def_hash: str
    from_step: str | None
    reused: list[str]
    rerun: list[str]
    external_calls: list[ExternalCall]
    inputs: dict[str, Any]
    latest: bool = False
    notes: list[str] = field(default_factory=list)
    encrypt: bool = False  # the workflow stores its payloads encrypted
    admission: Admission | None = None  # the new run's priority (the original's) and concurrency key


def _descendants(defn: Definition, step_id: str) -> set[str]:
    out = {step_id}
    changed = True
    while changed:
        changed = False
        for sid in defn.order:
            if sid not in out and any(dep in out for dep in defn.needs[sid]):
                out.add(sid)
                changed = True
    return out


def _call_detail(defn: Definition, step_id: str) -> str:
    step = defn.step(step_id)
    w = step.with_
    if step.uses == "http":
        return f"{w.get('method', 'GET')} {w.get('url', '?')}"
    if step.uses == "python":
        return str(w.get("function", "?"))
    if step.uses == "tool":
        return f"{w.get('server', '?')}.{w.get('tool', '?')}"
    if step.uses in ("llm", "agent"):
        return f"{w.get('provider', 'openai')} {w.get('model', '?')}"
    return step.uses


async def plan_replay(pool: asyncpg.Pool, run_id: str, *, from_step: str | None = None,
                      inputs: dict[str, Any] | None = None, latest: bool = False,
                      cipher: PayloadCipher | None = None) -> ReplayPlan:
    row = await pool.fetchrow("SELECT workflow, def_hash, inputs, status, priority FROM runs WHERE run_id = $1",
                              run_id)
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    original = {"inputs": row["inputs"]}
    await open_fields(cipher, [original])  # encrypted payloads: the plan works on plaintext
    found = await load_spec(pool, row["def_hash"])
    if found is None:
        raise NotFound(f"the definition of run {run_id} is gone")
    pinned = Definition.from_json(found[0])
    defn, def_hash, notes = pinned, row["def_hash"], []
    if latest:
        current = await active_version(pool, row["workflow"])
        if current is None:
            raise NotFound(f"workflow {row['workflow']!r} has no active version (deleted?)")
        defn, def_hash = Definition.from_json(current[1]), current[0]
    state = RunState.from_events(run_id, await store.load_events(pool, run_id))
    if from_step is not None and from_step not in defn.needs:
        raise WorkerError(f"step {from_step!r} is not in workflow {row['workflow']} "
                          f"(steps: {', '.join(defn.order)})")
    asked = from_step
    if from_step is None:
        # the common case: retry from the first step that did not finish well
        for sid in defn.order:
            st = state.steps.get(sid)
            if st is None or st.status not in _REUSABLE:
                from_step = sid
                break
    rerun: set[str] = _descendants(defn, from_step) if from_step is not None else set()
    for sid in defn.order:
        st = state.steps.get(sid)
        if st is None or st.status not in _REUSABLE:
            rerun |= _descendants(defn, sid)
    reused = [sid for sid in defn.order if sid not in rerun]
    if latest:
        # where the run stopped under its own version must still be there, or the replay would skip it
        stopped = next((sid for sid in pinned.order
                        if (st := state.steps.get(sid)) is None or st.status not in _REUSABLE), None)
        if stopped is not None and stopped not in defn.needs and asked is None:
            raise WorkerError(f"the current version is not compatible with this run: step {stopped!r}, where it "
                              "stopped, is not in the current version (renamed or removed); replay it under its "
                              "own version")
        incompatible = [sid for sid in reused if sid not in pinned.needs
                        or pinned.step(sid).uses != defn.step(sid).uses]
        if incompatible:
            raise WorkerError("the current version is not compatible with this run: step(s) "
                              f"{', '.join(incompatible)} would be reused but differ or do not exist in the "
                              "run's version; replay from an earlier step or without --latest")
        if def_hash != row["def_hash"]:
            notes.append(f"runs under the current version {def_hash[:12]} (the run had {row['def_hash'][:12]})")
    new_inputs = resolve_inputs(defn.spec, {**(original["inputs"] or {}), **(inputs or {})})
    if inputs:
        notes.append("inputs changed: reused steps keep the outputs they had with the old inputs")
    calls = []
    for sid in defn.order:
        if sid in rerun and defn.step(sid).uses in EXTERNAL_KINDS:
            count = None
            if defn.step(sid).foreach is not None:
                st = state.steps.get(sid)
                count = st.count if st is not None else None
            calls.append(ExternalCall(sid, defn.step(sid).uses, _call_detail(defn, sid), count))
    return ReplayPlan(run_id, row["workflow"], def_hash, from_step, reused,
                      [sid for sid in defn.order if sid in rerun], calls, new_inputs, latest, notes,
                      encrypt=defn.spec.encrypt_payloads,
                      admission=await admission_for(defn, new_inputs, priority=row["priority"]))


def _reused_events(events: list[ev.Event], reused: set[str], source_run: str) -> list[ev.Event]:
    """The events that make reused steps done in the new run: expansions, completions, skips."""
    keep = (ev.STEP_EXPANDED, ev.STEP_COMPLETED, ev.STEP_SKIPPED)
    out = []
    for e in events:
        if e.step_id in reused and e.type in keep:
            # no attempt number: nothing was attempted in the new run
            out.append(ev.Event(e.type, e.ts, e.step_id, e.item, None, {**e.data, "reused_from": source_run}))
    return out


async def create_replay(conn: asyncpg.Connection, plan: ReplayPlan, requested_by: str, *,
                        cipher: PayloadCipher | None = None, encrypt: bool = False) -> tuple[str, Admitted]:
    """Insert the new run with its seeded log (inside the caller's transaction); returns its id and how it was
    admitted (a run its concurrency key cancelled at once gets no seeded log).

    Reused events are copied as stored (ciphertext stays ciphertext); new inputs are sealed when the
    workflow (or the deployment) encrypts payloads."""
    run_id = str(uuid.uuid4())
    now = time.time()
    created = ev.Event(ev.RUN_CREATED, now, data={
        "workflow": plan.workflow, "def_hash": plan.def_hash, "inputs": plan.inputs, "requested_by": requested_by,
        "replay_of": plan.source_run, "replay_from": plan.from_step})
    if encrypt or plan.encrypt:
        await seal_fields(cipher, [created.data])
    admitted = await store.insert_run_txn(conn, run_id=run_id, workflow=plan.workflow, def_hash=plan.def_hash,
                                          inputs=created.data["inputs"], created=created, requested_by=requested_by,
                                          admission=plan.admission)
    assert admitted is not None  # a new id
    await conn.execute("UPDATE runs SET replay_of = $2, replay_from = $3 WHERE run_id = $1",
                       run_id, plan.source_run, plan.from_step)
    seeded = _reused_events(await store.load_events(conn, plan.source_run), set(plan.reused), plan.source_run)
    if seeded and admitted.status != "cancelled":
        await conn.executemany(
            """INSERT INTO events (run_id, seq, ts, type, step_id, item, attempt, data, history_at)
               SELECT $1, $2, to_timestamp($3), $4, $5, $6, $7, $8, history_at FROM runs WHERE run_id = $1""",
            [(run_id, i + 2, now, e.type, e.step_id, e.item, e.attempt, e.data) for i, e in enumerate(seeded)])
        await conn.execute("UPDATE runs SET next_seq = $2 WHERE run_id = $1", run_id, len(seeded) + 2)
    return run_id, admitted


def plan_as_dict(plan: ReplayPlan) -> dict[str, Any]:
    return {
        "source_run": plan.source_run, "workflow": plan.workflow, "version": plan.def_hash[:12],
        "from_step": plan.from_step, "reused": plan.reused, "rerun": plan.rerun,
        "external_calls": [{"step": c.step_id, "kind": c.kind, "call": c.detail, "items": c.items}
                           for c in plan.external_calls],
        "inputs": plan.inputs, "latest": plan.latest, "notes": plan.notes,
    }
