"""What the run tree nests beneath a step besides its attempts: an agent's turns and a workflow step's child runs.

Pure: from `StepView` and `RunDetail` to small records and their one-line tree labels (Rich `Text`, no
widgets). A finished agent step's turns come from its output's transcript, an unfinished one's from its
journal (`StepView.progress["calls"]`); both number calls the way the agent loop does (LLM turns and tool
calls, in order), so a node keeps its key when the step finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text

from console.formatting import short_id, status_glyph, status_style
from worker.models import JSON, RunDetail, StepStatus, StepView


@dataclass(frozen=True, slots=True)
class AgentCall:
    """One LLM turn or tool call of an agent step; `index` is its place in the step's journal."""

    index: int
    kind: str  # "llm" | "tool"
    turn: int
    """The LLM turn (from 1) that is, or that asked for, this call."""
    text: str = ""
    """The assistant's text, or the tool's result."""
    name: str = ""
    arguments: JSON = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    """An LLM turn's requests: `{"id", "name", "arguments"}`."""
    usage: dict[str, Any] | None = None
    model: str | None = None
    finish_reason: str | None = None
    cost_usd: float | None = None
    is_error: bool = False
    approval: dict[str, Any] | None = None
    made: bool = True
    """False for a tool call the model asked for that the step has not made (yet)."""
    awaiting: bool = False
    """The call the step is parked on, waiting for a human to approve it."""


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A run that a `workflow` step started (from the parent's events)."""

    run_id: str
    workflow: str | None = None
    step_id: str | None = None
    item: int | None = None
    status: str | None = None
    """Set once the parent has seen it finish (`child.finished`)."""
    error: str | None = None


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _asked(value: object) -> tuple[dict[str, Any], ...]:
    return tuple(c for c in value if isinstance(c, dict)) if isinstance(value, list) else ()


def _dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _from_messages(messages: list[Any]) -> list[AgentCall]:
    """Transcript messages (finished step) or journal calls (unfinished): both become `AgentCall`s."""
    out: list[AgentCall] = []
    index, turn = 0, 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        kind = m.get("type") or {"assistant": "llm", "tool": "tool"}.get(str(m.get("role")))
        if kind not in ("llm", "tool"):
            continue  # the prompt, or the feedback on an answer that missed the schema
        index = int(m["index"]) if isinstance(m.get("index"), int) else index
        if kind == "llm":
            turn += 1
            cost = m.get("cost_usd")
            out.append(AgentCall(index, "llm", turn, _text(m.get("text", m.get("content"))),
                                 tool_calls=_asked(m.get("tool_calls")), usage=_dict(m.get("usage")),
                                 model=m.get("model"), finish_reason=m.get("finish_reason"),
                                 cost_usd=float(cost) if isinstance(cost, int | float) else None))
        else:
            out.append(AgentCall(index, "tool", turn, _text(m.get("text", m.get("content"))),
                                 name=str(m.get("name") or "?"), arguments=m.get("arguments"),
                                 is_error=bool(m.get("isError")), approval=_dict(m.get("approval"))))
        index += 1
    return out


def _not_made(calls: list[AgentCall], status: str) -> list[AgentCall]:
    """The tool calls the last LLM turn asked for that the journal does not hold yet."""
    last = next((c for c in reversed(calls) if c.kind == "llm"), None)
    if last is None:
        return []
    made = sum(1 for c in calls if c.kind == "tool" and c.index > last.index)
    out: list[AgentCall] = []
    for n, asked in enumerate(last.tool_calls[made:]):
        out.append(AgentCall(last.index + 1 + made + n, "tool", last.turn, name=str(asked.get("name") or "?"),
                             arguments=asked.get("arguments"), made=False,
                             awaiting=n == 0 and status == StepStatus.WAITING))
    return out


def agent_calls(view: StepView) -> list[AgentCall]:
    """An agent step's (or foreach item's) LLM turns and tool calls, in order; [] for other steps."""
    if view.kind != "agent":
        return []
    output, progress = view.output, view.progress
    if isinstance(output, dict) and isinstance(output.get("transcript"), list):
        return _from_messages(output["transcript"])
    if isinstance(progress, dict) and isinstance(progress.get("calls"), list):
        calls = _from_messages(progress["calls"])
        return calls + _not_made(calls, str(view.status))
    return []


def tool_state(call: AgentCall) -> tuple[str, str]:
    """A tool call's status (for the glyph and style) and a few words: `("rejected", "rejected by alice")`."""
    approval = call.approval or {}
    by = approval.get("by") or "a human"
    if call.awaiting:
        return "waiting", "awaiting approval"
    if not call.made:
        return "pending", "not made"
    if approval.get("status") == "rejected":
        return "rejected", f"rejected by {by}"
    if approval.get("status") == "timed_out":
        return "timed_out", "approval timed out"
    if call.is_error:
        return "failed", "error"
    if approval.get("status") == "approved":
        return "completed", f"approved by {by}"
    return "completed", ""


def call_label(call: AgentCall) -> Text:
    """`turn 1 · llm · 110 tok → refund, lookup` or `tool refund ✗ rejected by alice`."""
    if call.kind == "llm":
        label = Text(f"turn {call.turn}")
        label.append(" · llm", style="dim")
        total = (call.usage or {}).get("total_tokens")
        if isinstance(total, int):
            label.append(f" · {total:,} tok", style="dim")
        names = [str(c.get("name") or "?") for c in call.tool_calls]
        label.append(" → " + (", ".join(names) if names else "answer"))
        return label
    status, words = tool_state(call)
    label = Text(f"tool {call.name} ")
    label.append(f"{status_glyph(status)} {words}".rstrip(), style=status_style(status))
    return label


def child_runs(detail: RunDetail) -> list[ChildRun]:
    """The runs the run's workflow steps started, in order (then any other child run the store knows of)."""
    found: dict[str, ChildRun] = {}
    for e in detail.events:
        data = e.data if isinstance(e.data, dict) else {}
        if not data.get("child_run_id"):
            continue
        run_id = str(data["child_run_id"])
        child = found.get(run_id) or ChildRun(run_id, step_id=e.step_id, item=e.item)
        if isinstance(data.get("workflow"), str):
            child = replace(child, workflow=data["workflow"])
        if e.type == "child.finished":
            child = replace(child, status=str(data.get("status") or "") or None, error=data.get("error"))
        found[run_id] = child
    for run_id in detail.children:
        found.setdefault(str(run_id), ChildRun(str(run_id)))
    return list(found.values())


def child_label(child: ChildRun) -> Text:
    """`↳ run 1a2b3c4d refund-check ✓` (the glyph once the child has finished)."""
    label = Text(f"↳ run {short_id(child.run_id)}")
    if child.workflow:
        label.append(f" {child.workflow}", style="dim")
    if child.status:
        label.append(f" {status_glyph(child.status)}", style=status_style(child.status))
    return label
