"""What the run-detail inspector shows for the run, a step (or foreach item) and an attempt.

Plain Rich `Text` builders: no widgets here, so the screen stays short and these stay testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.text import Text

from console.formatting import (
    DASH,
    deadline_style,
    format_age,
    format_clock,
    format_clock_ms,
    format_duration,
    format_json,
    format_left,
    format_timestamp,
    item_suffix,
    run_elapsed,
    short_id,
    status_glyph,
    status_label,
    status_style,
    trigger_label,
    wait_kind,
)
from console.run_tree import AgentCall, ChildRun, tool_state
from worker.models import AttemptView, RunDetail, StepLogLine, StepView, usage_in

CALL_TEXT = 4000
"""Characters of an LLM turn's text or a tool's result the inspector shows."""
LOG_LINES = 200
"""The newest log lines of a step the inspector shows."""


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
    if s.wake_at is not None:
        until = "deadline" if wait_kind(s.waiting_on) in ("event", "human") else "wakes"
        _field(out, until, f"{format_timestamp(s.wake_at)} ({format_left(s.wake_at, now)})",
               deadline_style(s.wake_at, now))
    _field(out, "trigger", trigger_label(s.trigger))
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
        so_far = f" so far ({view.progress.get('turns', 0)} turns)" if view.output is None and view.progress else ""
        _field(out, "tokens", _tokens(usage) + so_far)
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


def _tokens(usage: dict[str, Any]) -> str:
    cost = DASH if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
    return (f"{usage['total_tokens']:,} (in {usage['input_tokens']:,}, out {usage['output_tokens']:,}) "
            f"· cost {cost}")


def _clipped(text: str) -> str:
    if len(text) <= CALL_TEXT:
        return text
    return text[:CALL_TEXT] + f"\n… ({len(text) - CALL_TEXT} more characters)"


def inspect_call(view: StepView, call: AgentCall) -> Text:
    """One LLM turn (text, the tools it asked for, tokens) or tool call (arguments, result, approval)."""
    out = Text()
    where = f"{view.step_id}{item_suffix(view.item)} · call {call.index}"
    if call.kind == "llm":
        out.append(f"turn {call.turn}", style="bold")
        out.append(f"  llm · {where}\n", style="dim")
        _field(out, "model", call.model or DASH)
        _field(out, "finish", call.finish_reason or DASH)
        usage = usage_in({"usage": call.usage, "cost_usd": call.cost_usd})
        _field(out, "tokens", DASH if usage is None else _tokens(usage))
        _section(out, "text")
        out.append(_clipped(call.text) + "\n" if call.text else "no text\n", style="" if call.text else "dim")
        if call.tool_calls:
            _section(out, f"tool calls ({len(call.tool_calls)})")
            for asked in call.tool_calls:
                out.append(f"{asked.get('name') or '?'}\n", style="bold")
                out.append(format_json(asked.get("arguments")) + "\n")
        return out
    if not call.made:
        status, words = tool_state(call)
    else:  # the approval, if any, gets its own line
        status, words = ("failed", "error") if call.is_error else ("completed", "ok")
    out.append(f"tool {call.name}", style="bold")
    out.append(f"  turn {call.turn} · {where}\n", style="dim")
    _field(out, "status", f"{status_glyph(status)} {words}", status_style(status))
    if call.approval:
        a, decided = call.approval, str(call.approval.get("status") or "")
        _field(out, "approval", f"{status_glyph(decided)} {decided or DASH} by {a.get('by') or DASH}",
               status_style(decided))
        if a.get("reason"):
            _field(out, "reason", str(a["reason"]))
    _section(out, "arguments")
    out.append(format_json(call.arguments) + "\n")
    if call.made:
        _section(out, "error" if call.is_error else "result")
        out.append(_clipped(call.text) + "\n" if call.text else "no text\n",
                   style=("red" if call.is_error else "") if call.text else "dim")
    return out


def inspect_child(child: ChildRun) -> Text:
    """A child run started by a workflow step: what it is, and how to open it."""
    out = Text()
    out.append("child run", style="bold")
    out.append(f"  {child.workflow or ''}\n", style="dim")
    _field(out, "run", child.run_id)
    _field(out, "workflow", child.workflow or DASH)
    if child.step_id is not None:
        _field(out, "step", f"{child.step_id}{item_suffix(child.item)}")
    if child.status:
        _field(out, "status", status_label(child.status), status_style(child.status))
    else:
        _field(out, "status", "not finished when last seen", "dim")
    if child.error:
        _section(out, "error")
        out.append(child.error + "\n", style="red")
    out.append("\nenter", style="bold")
    out.append(" opens its run detail; esc comes back here\n", style="dim")
    return out


def logs_text(lines: list[StepLogLine], item: object, attempt: int | None) -> Text:
    """The inspector's logs section: a foreach item's (or an attempt's) lines, newest last."""
    if item is not None:
        lines = [x for x in lines if x.item == item]
    if attempt is not None:
        lines = [x for x in lines if x.attempt == attempt]
    out = Text()
    out.append(f"\nlogs ({len(lines)})\n", style="bold underline")
    if not lines:
        out.append("no log lines\n", style="dim")
    if len(lines) > LOG_LINES:
        out.append(f"… {len(lines) - LOG_LINES} older lines\n", style="dim")
    for x in lines[-LOG_LINES:]:
        level_style = {"ERROR": "bold red", "CRITICAL": "bold red", "WARNING": "yellow"}.get(x.level, "dim")
        out.append(format_clock_ms(x.ts) + " ", style="dim")
        out.append(f"{x.level[:4]:<4} ", style=level_style)
        where = item_suffix(x.item) + (f"#{x.attempt}" if x.attempt is not None else "")
        if where:
            out.append(where + " ", style="dim")
        out.append(x.message + "\n")
    return out
