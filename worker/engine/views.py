"""Read models: a run's steps and attempts as the CLI and console show them (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from worker import runlog as ev
from worker.engine.state import RunState
from worker.models import AttemptView, StepStatus, StepView


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def step_views(run_id: str, events: list[ev.Event], kinds: dict[str, str], order: list[str]) -> list[StepView]:
    """One view per step (and per foreach item), in definition order, with every attempt."""
    state = RunState.from_events(run_id, events)
    attempts: dict[tuple[str, int | None], dict[int, dict[str, object]]] = {}
    keys: dict[tuple[str, int | None], str | None] = {}
    for e in events:
        if e.step_id is None or e.attempt is None:
            continue
        k = (e.step_id, e.item)
        per = attempts.setdefault(k, {})
        a = per.setdefault(e.attempt, {"started": None, "finished": None, "status": "running", "error": None})
        if e.type in (ev.STEP_STARTED, ev.STEP_WAITING) and a["started"] is None:
            a["started"] = e.ts
            if e.type == ev.STEP_WAITING:
                a["status"] = "waiting"
            if e.data.get("key"):
                keys[k] = e.data["key"]
        elif e.type == ev.STEP_COMPLETED:
            a["finished"], a["status"] = e.ts, "completed"
        elif e.type == ev.STEP_FAILED:
            a["finished"], a["error"] = e.ts, e.data.get("error")
            a["status"] = "cancelled" if e.data.get("cancelled") else (
                "crashed" if e.data.get("crashed") else "interrupted" if e.data.get("interrupted") else "failed")
    views: list[StepView] = []
    for step_id in order:
        st = state.steps.get(step_id)
        items = [None] if st is None or st.count is None else [None, *range(st.count)]
        for item in items:
            inst = state.instances.get((step_id, item))
            if item is None and st is not None and st.count is not None:
                status, inputs, output, error = st.status, None, st.output, st.error
            elif inst is not None:
                status, inputs, output, error = inst.status, inst.inputs, inst.output, inst.error
            else:
                status = st.status if st is not None else StepStatus.PENDING
                inputs, output, error = None, None, None
            per = attempts.get((step_id, item), {})
            views.append(StepView(
                step_id=step_id, kind=kinds.get(step_id, "?"), item=item, status=status,
                attempts=tuple(
                    AttemptView(n, _dt(a["started"]), _dt(a["finished"]), str(a["status"]),  # type: ignore[arg-type]
                                a["error"])  # type: ignore[arg-type]
                    for n, a in sorted(per.items())),
                inputs=inputs, output=output, error=error, idempotency_key=keys.get((step_id, item)),
            ))
    return views


def run_usage(steps: Iterable[StepView]) -> dict[str, Any]:
    """Tokens and cost of a run: the sum over its llm/agent steps (and foreach items), including what
    unfinished agent steps have used so far.

    A step with no price in its table counts its tokens but no cost (`priced` says whether every
    counted step had a price).
    """
    total: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cost_usd": 0.0,
                             "steps": 0, "priced": True}
    for step in steps:
        usage = step.usage
        if usage is None:
            continue
        total["steps"] += 1
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            total[key] += usage[key]
        if usage["cost_usd"] is None:
            total["priced"] = False
        else:
            total["cost_usd"] = round(total["cost_usd"] + usage["cost_usd"], 8)
    return total
