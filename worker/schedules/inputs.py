"""A schedule's `inputs:`: rendered at each tick into the run's inputs, and checked when the file loads.

The strings of `inputs:` may read two names: `tick` (the tick as ISO 8601 in the schedule's timezone, e.g.
`2026-03-29T03:00:00+02:00`) and `tick_unix` (seconds since the epoch). They are evaluated by the same
bounded expression engine as steps (a work budget, never `eval`), and nothing else is ever evaluated: the
rendered values are data. The result is the run's inputs, checked against the workflow's `inputs:` like any
start. At load time the mapping is rendered once with a sample tick, so a mapping that could never start a
run (an unknown or missing input, a wrong type) is an error at file:line:column, not a refused tick later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from worker.definitions.expressions import OPEN, check_template, render, root_reads
from worker.definitions.schema import ScheduleTrigger, WorkflowSpec
from worker.engine.inputs import InputError, resolve_inputs
from worker.errors import ExpressionError
from worker.schedules.ticks import Cadence

TICK_NAMES = ("tick", "tick_unix")
"""The names a schedule's inputs may read."""
SAMPLE_TICK = datetime(2000, 1, 1, tzinfo=UTC)
"""The tick the load-time check renders the inputs with."""

Loc = tuple[str | int, ...]


def cadence_of(trigger: ScheduleTrigger) -> Cadence:
    return Cadence(cron=trigger.cron, every=None if trigger.every is None else int(trigger.every),
                   timezone=trigger.timezone)


def render_inputs(spec: WorkflowSpec, trigger: ScheduleTrigger, tick: datetime) -> dict[str, Any]:
    """The run's inputs for `tick`: rendered, defaults applied, checked (ExpressionError, InputError)."""
    rendered = render(trigger.inputs, cadence_of(trigger).render_tick(tick))
    assert isinstance(rendered, dict)
    return resolve_inputs(spec, rendered)


def _strings(value: object, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        if OPEN in value:
            yield loc, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))


def _where(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))


def schedule_problems(spec: WorkflowSpec) -> list[tuple[Loc, str, bool]]:
    """(location, reason, at_key) of every problem of the workflow's `on.schedule.inputs`."""
    trigger = spec.on.schedule if spec.on is not None else None
    if trigger is None:
        return []
    base: Loc = ("on", "schedule", "inputs")
    problems: list[tuple[Loc, str, bool]] = []
    if spec.inputs:
        declared = ", ".join(sorted(spec.inputs))
        for key in trigger.inputs:
            if key not in spec.inputs:
                problems.append(((*base, key), f"{_where(base)}: unknown input '{key}' (declared: {declared})", True))
    for loc, text in _strings(trigger.inputs, base):
        try:
            check_template(text)
            names = sorted({read.root for read in root_reads(text)} - set(TICK_NAMES))
        except ExpressionError as exc:
            problems.append((loc, f"{_where(loc)}: {exc}", False))
            continue
        if names:
            reason = f"{_where(loc)}: unknown name '{names[0]}' (a schedule's inputs may read tick and tick_unix)"
            problems.append((loc, reason, False))
    if problems:
        return problems
    try:
        render_inputs(spec, trigger, SAMPLE_TICK)
    except (ExpressionError, InputError) as exc:
        hint = "" if trigger.inputs else " (give it under on.schedule.inputs)"
        return [(base, f"{_where(base)}: every tick would be refused: {exc}{hint}", False)]
    return []
