"""What the run-detail inspector shows for the run, a step (or foreach item) and an attempt.

Plain Rich `Text` builders: no widgets here, so the screen stays short and these stay testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text

from console.formatting import (
    DASH,
    format_age,
    format_clock,
    format_duration,
    format_json,
    format_timestamp,
    item_suffix,
    run_elapsed,
    short_id,
    status_label,
    status_style,
)
from worker.models import AttemptView, RunDetail, StepView


def _section(out: Text, title: str) -> None:
    out.append(f"\n{title}\n", style="bold underline")


def _field(out: Text, name: str, value: str, style: str = "") -> None:
    out.append(f"{name:<10}", style="dim")
    out.append(value + "\n", style=style)


def attempt_seconds(a: AttemptView, now: datetime) -> float | None:
    if a.started_at is None:
        return None
    return ((a.finished_at or now) - a.started_at).total_seconds()


def attempt_line(a: AttemptView, now: datetime) -> Text:
    """`#2 ✓ completed 12:00:04→12:00:04  300ms` (UTC)."""
    out = Text()
    out.append(f"#{a.attempt} ", style="bold")
    out.append(f"{status_label(a.status):<11}", style=status_style(a.status))
    out.append(f" {format_clock(a.started_at)}→{format_clock(a.finished_at)}", style="dim")
    out.append(f"  {format_duration(attempt_seconds(a, now))}")
    if a.error:
        out.append(f"\n   {a.error}", style="red")
    return out


def inspect_run(detail: RunDetail, now: datetime) -> Text:
    s = detail.summary
    out = Text()
    out.append(f"{s.workflow}\n", style="bold")
    _field(out, "run", s.run_id)
    _field(out, "status", status_label(s.status, waiting_on=s.waiting_on), status_style(s.status))
    if s.waiting_on:
        _field(out, "waiting", s.waiting_on)
    _field(out, "version", short_id(s.def_hash, 12))
    _field(out, "started", f"{format_timestamp(s.created_at)} ({format_age(s.created_at, now)})")
    _field(out, "finished", format_timestamp(s.finished_at))
    _field(out, "duration", format_duration(run_elapsed(s.created_at, s.finished_at, now)))
    _field(out, "step", s.current_step or DASH)
    if s.parent_run_id:
        _field(out, "parent", s.parent_run_id)
    if detail.children:
        _field(out, "children", ", ".join(short_id(c) for c in detail.children))
    if s.error:
        _section(out, "error")
        out.append(s.error + "\n", style="red")
    _section(out, "inputs")
    out.append(format_json(detail.inputs) + "\n")
    _section(out, "output")
    out.append(format_json(detail.output) + "\n")
    return out


def inspect_step(view: StepView, items: Sequence[StepView], now: datetime, attempt: int | None = None,
                 logs: Text | None = None) -> Text:
    """A step, a foreach item, or (with `attempt`) one attempt of it; `items` are a foreach's items.

    `logs` (the step's log lines section) goes right after the attempts, before inputs and output.
    """
    out = Text()
    out.append(f"{view.step_id}{item_suffix(view.item)}", style="bold")
    out.append(f"  {view.kind}\n", style="dim")
    _field(out, "status", status_label(view.status), status_style(view.status))
    _field(out, "idem. key", view.idempotency_key or DASH)
    usage = view.usage
    if usage is not None:
        cost = DASH if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
        so_far = f" so far ({view.progress.get('turns', 0)} turns)" if view.output is None and view.progress else ""
        _field(out, "tokens", f"{usage['total_tokens']:,} (in {usage['input_tokens']:,}, out "
                              f"{usage['output_tokens']:,}) · cost {cost}{so_far}")
    if items:
        done = sum(1 for i in items if i.status == "completed")
        _field(out, "foreach", f"{len(items)} items, {done} completed")
    if view.error:
        _section(out, "error")
        out.append(view.error + "\n", style="red")
    if view.attempts:
        _section(out, f"attempts ({len(view.attempts)})")
        for a in view.attempts:
            line = attempt_line(a, now)
            if attempt is not None and a.attempt == attempt:
                line.stylize("reverse")
            out.append_text(line)
            out.append("\n")
    if logs is not None:
        out.append_text(logs)
    if view.item is not None or not items:
        _section(out, "inputs")
        out.append(format_json(view.inputs) + "\n")
    _section(out, "output")
    out.append(format_json(view.output) + "\n")
    return out
