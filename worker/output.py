"""Human and JSON rendering for the CLI (stdout belongs to the data; messages go to stderr)."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(type(value).__name__)


def to_jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS))


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, default=_default,
                                  option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    now = now or datetime.now(tz=UTC)
    secs = (now - when).total_seconds()
    if secs < 0:
        return "in " + duration(-secs)
    return duration(secs) + " ago"


def duration(secs: float | None) -> str:
    if secs is None:
        return "-"
    if secs < 1:
        return f"{secs * 1000:.0f}ms"
    if secs < 60:
        return f"{secs:.1f}s"
    if secs < 3600:
        return f"{int(secs // 60)}m{int(secs % 60):02d}s"
    if secs < 86400:
        return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"
    return f"{int(secs // 86400)}d{int(secs % 86400 // 3600):02d}h"


STATUS_STYLE = {
    "queued": "dim", "pending": "dim", "running": "cyan", "waiting": "yellow", "retrying": "yellow",
    "paused": "magenta",
    "completed": "green", "failed": "red", "cancelled": "magenta", "skipped": "dim", "approved": "green",
    "rejected": "red", "timed_out": "red", "resolved": "green", "active": "green", "invalid": "red", "deleted": "dim",
}


def pause_text(p: Any) -> str:
    """A PauseInfo as `paused by alice 3m ago: reason` (`paused (workflow) by ...` for a workflow's pause)."""
    scope = " (workflow)" if p.scope == "workflow" else ""
    return f"paused{scope} by {p.by} {ago(p.at)}" + (f": {p.reason}" if p.reason else "")


def retry_text(r: Any, limit: int = 80) -> str:
    """A RunSummary backing off between attempts: `retrying 3/5 (next in 12s): HTTP 503 from ...`."""
    counts = (r.waiting_on or "retry").removeprefix("retry").strip()
    when = ""
    if r.wake_at is not None:
        secs = (r.wake_at - datetime.now(tz=UTC)).total_seconds()
        when = f" (next in {duration(secs)})" if secs > 0 else " (due)"
    error = f": {r.error[:limit]}" if r.error else ""
    return f"retrying {counts}{when}{error}".replace("retrying  ", "retrying ")


def status_text(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def table(*columns: str) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def compact(value: Any, limit: int = 200) -> str:
    text = orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
