"""Pure display helpers: durations, ages, status labels and styles, truncation, JSON.

No Textual imports and no clocks: every function that needs "now" takes it as an argument, so the
screens stay deterministic under a fixed clock and these helpers are testable on their own.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from worker.models import WorkflowEvent, WorkflowInfo

DASH = "—"
ELLIPSIS = "…"

# status -> (glyph, rich style). Glyphs carry the meaning when colours are off (NO_COLOR).
_STATUS: dict[str, tuple[str, str]] = {
    "queued": ("⧗", "dim"),
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "retrying": ("↻", "yellow"),
    "waiting": ("◷", "yellow"),
    "completed": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "crashed": ("✗", "bold red"),
    "cancelled": ("⊘", "magenta"),
    "skipped": ("↷", "dim"),
    "approved": ("✓", "green"),
    "rejected": ("✗", "red"),
    "timed_out": ("⌛", "red"),
    "resolved": ("✓", "green"),
    "active": ("✓", "green"),
    "invalid": ("✗", "bold red"),
    "deleted": ("⊘", "dim"),
    "loaded": ("✓", "green"),
}


def status_glyph(status: str) -> str:
    """A one-character marker for a run, step, attempt, task or workflow status."""
    return _STATUS.get(str(status), ("?", ""))[0]


_WAIT_KINDS = {"human": "⏸ human", "event": "◷ event", "sleep": "◷ sleep", "child": "◷ child", "retry": "↻ retry",
               "throttled:": "◷ throttled"}  # waiting for capacity under a limit (worker/limits)


def wait_kind(waiting_on: str | None) -> str | None:
    """What a parked run waits for, as one word: `event customer.replied key T-42` -> `event`."""
    return waiting_on.split(" ", 1)[0] if waiting_on else None


def status_label(status: str, *, waiting_on: str | None = None) -> str:
    """`✓ completed`; for a parked run what it waits for: `⏸ human`, `◷ event`, `◷ sleep`, `↻ retry`."""
    value = str(status)
    if value == "waiting" and wait_kind(waiting_on) in _WAIT_KINDS:
        return _WAIT_KINDS[str(wait_kind(waiting_on))]
    return f"{status_glyph(value)} {value}"


# trigger -> (short word for an 80-column table, word); None is a person (CLI, console)
_TRIGGERS: dict[str | None, tuple[str, str]] = {
    None: ("manual", "manual"),
    "api": ("api", "api"),
    "schedule": ("sched", "schedule"),
    "event": ("event", "event"),
    "webhook": ("hook", "webhook"),
    "parent": ("parent", "parent"),
}


def trigger_label(trigger: str | None, *, short: bool = False) -> str:
    """What started a run: `manual`, `api`, `schedule` (`sched`), `event`, `webhook` (`hook`), `parent` (a
    child run); an unknown kind as it is, cut to six characters when short."""
    long_short = _TRIGGERS.get(trigger)
    if long_short is None:
        return truncate(str(trigger), 6) if short else str(trigger)
    return long_short[0] if short else long_short[1]


def status_style(status: str) -> str:
    """A Rich style for a status (colour is dropped by Textual when NO_COLOR is set)."""
    return _STATUS.get(str(status), ("?", ""))[1]


def status_class(status: str) -> str:
    """The `-modifier` CSS class that a widget showing this status should carry."""
    return "-" + re.sub(r"[^a-z0-9]+", "-", str(status).lower()).strip("-")


def short_id(value: str | None, n: int = 8) -> str:
    return value[:n] if value else DASH


def truncate(text: str | None, width: int) -> str:
    """Cut to `width` cells with an ellipsis; newlines become spaces."""
    if text is None:
        return ""
    flat = one_line(text)
    if width <= 0:
        return ""
    if len(flat) <= width:
        return flat
    return flat[: max(width - 1, 0)] + ELLIPSIS


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_duration(seconds: float | None) -> str:
    """Compact duration: `350ms`, `4.2s`, `42s`, `4m05s`, `3h02m`, `2d04h`."""
    if seconds is None:
        return DASH
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    if total < 86400:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    return f"{total // 86400}d{total % 86400 // 3600:02d}h"


def _coarse(seconds: float) -> str:
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m"
    if total < 86400:
        return f"{total // 3600}h"
    return f"{total // 86400}d"


def format_age(then: datetime | None, now: datetime) -> str:
    """How long ago: `now`, `12s ago`, `4m ago`, `3h ago`, `2d ago` (or `in 5m` for the future)."""
    if then is None:
        return DASH
    delta = (now - then).total_seconds()
    if abs(delta) < 1:
        return "now"
    if delta < 0:
        return f"in {_coarse(-delta)}"
    return f"{_coarse(delta)} ago"


def format_countdown(deadline: datetime | None, now: datetime) -> str:
    """Time left before a deadline: `in 3h59m`, `in 42s`, `overdue 2m`, or a dash."""
    if deadline is None:
        return DASH
    left = (deadline - now).total_seconds()
    if left < 0:
        return f"overdue {_coarse(-left)}"
    if left >= 3600:
        total = int(left)
        return f"in {total // 3600}h{total % 3600 // 60:02d}m"
    return f"in {format_duration(left)}"


def format_left(deadline: datetime | None, now: datetime) -> str:
    """Time left, compact: `2d3h left`, `3h59m left`, `4m left`, `42s left`, `overdue 2m`, or a dash."""
    if deadline is None:
        return DASH
    left = int((deadline - now).total_seconds())
    if left < 0:
        return f"overdue {_coarse(-left)}"
    if left >= 86400:
        return f"{left // 86400}d{left % 86400 // 3600}h left"
    if left >= 3600:
        return f"{left // 3600}h{left % 3600 // 60:02d}m left"
    if left >= 60:
        return f"{left // 60}m left"
    return f"{left}s left"


def wait_text(waiting_on: str | None, wake_at: datetime | None, now: datetime, *, human: bool = True) -> str:
    """What a parked run waits for and until when: `event customer.replied key T-42 · 2d3h left`.

    `human=False` leaves a human wait's word out (where the status already says `⏸ human`)."""
    parts = [waiting_on] if waiting_on and (human or waiting_on != "human") else []
    if wake_at is not None:
        parts.append(format_left(wake_at, now))
    return " · ".join(parts)


def deadline_style(deadline: datetime | None, now: datetime) -> str:
    if deadline is None:
        return "dim"
    left = (deadline - now).total_seconds()
    if left < 0:
        return "bold red"
    if left < 15 * 60:
        return "yellow"
    return ""


def run_elapsed(created_at: datetime, finished_at: datetime | None, now: datetime) -> float:
    """A finished run's duration, or how long an unfinished one has been going."""
    return ((finished_at or now) - created_at).total_seconds()


def format_clock(dt: datetime | None) -> str:
    """`12:00:03` in UTC (the console shows UTC everywhere, like the logs)."""
    if dt is None:
        return DASH
    return dt.astimezone(UTC).strftime("%H:%M:%S")


def format_clock_ms(dt: datetime | None) -> str:
    if dt is None:
        return DASH
    return dt.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def format_timestamp(dt: datetime | None) -> str:
    """`2025-03-14 12:00:03Z`."""
    if dt is None:
        return DASH
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_json(value: Any, max_chars: int = 4000) -> str:
    """Pretty JSON for the inspector; non-JSON values fall back to `str`; long output is cut."""
    if value is None:
        return "null"
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > max_chars:
        return text[:max_chars] + f"\n{ELLIPSIS} ({len(text) - max_chars} more characters)"
    return text


def compact_json(value: Any, width: int) -> str:
    """One line of JSON, cut to `width`."""
    if value is None or value == {}:
        return ""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return truncate(text, width)


def workflow_location(wf: WorkflowInfo) -> str:
    """`workflows/broken.yaml:12:5`, as an editor understands it."""
    if wf.error_line is None:
        return wf.path
    if wf.error_column is None:
        return f"{wf.path}:{wf.error_line}"
    return f"{wf.path}:{wf.error_line}:{wf.error_column}"


def truncate_left(text: str, width: int) -> str:
    """Cut from the left, keeping the end (a path's file name): `…/workflows/hello.yaml`."""
    if width <= 0:
        return ""
    return text if len(text) <= width else ELLIPSIS + text[len(text) - width + 1:]


def workflow_summary(wf: WorkflowInfo, width: int) -> str:
    """One table cell: the file (end kept), or for an invalid one `name.yaml:12:5: reason`."""
    if wf.status != "invalid":
        return truncate_left(wf.path, width)
    where = workflow_location(wf).replace("\\", "/").rsplit("/", 1)[-1]
    return truncate(f"{where}: {wf.error or 'invalid'}", width)


def excerpt_window(line: str, column: int | None, width: int) -> tuple[str, int | None]:
    """The part of an offending line that fits `width` cells, and where the caret goes in it.

    One cell per character (tabs and control characters become one cell), so the caret lines up; a
    long line is cut around the column with ellipses. The caret offset is None without a column.
    """
    text = "".join(c if c.isprintable() else "·" for c in line.replace("\t", " "))
    width = max(width, 8)
    if column is None or column < 1:
        return truncate(text, width), None
    col = column - 1
    if len(text) <= width:
        return text, min(col, len(text), width - 1)
    start = 0 if col < width - 1 else col - width // 2
    piece = text[start:start + width]
    if start > 0:
        piece = ELLIPSIS + piece[1:]
    if start + width < len(text):
        piece = piece[:-1] + ELLIPSIS
    return piece, min(col - start, len(piece) - 1)


def format_short_timestamp(dt: datetime | None) -> str:
    """`03-14 12:00:03` (UTC): a history table's time column."""
    if dt is None:
        return DASH
    return dt.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def reload_summary(event: WorkflowEvent, width: int) -> str:
    """One history cell: `hello.yaml → fcde2b2e`, or for an invalid save `broken.yaml:3:9: reason`."""
    file = event.path.replace("\\", "/").rsplit("/", 1)[-1]
    if event.kind == "invalid":
        error = (event.error or "invalid").replace("\\", "/")
        where = error.split(": ", 1)
        text = f"{where[0].rsplit('/', 1)[-1]}: {where[1]}" if len(where) == 2 and file in where[0] else error
        return truncate(text, width)
    if event.kind == "loaded" and event.def_hash:
        return truncate(f"{file} → {short_id(event.def_hash)}", width)
    return truncate(file, width)


def diff_line_style(line: str) -> str:
    """A Rich style for one line of a unified diff (the +/- prefix carries the meaning without colour)."""
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return ""


def item_suffix(item: int | None) -> str:
    return "" if item is None else f"[{item}]"


def describe_error(exc: BaseException, width: int = 160) -> str:
    text = str(exc).strip()
    return truncate(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, width)


_CONNECTION_NAMES = ("Connection", "InterfaceError", "CannotConnectNow", "AdminShutdown", "CrashShutdown",
                     "TooManyConnections", "StoreError", "BusError")


def is_connection_error(exc: BaseException) -> bool:
    """True when `exc` means the database or broker is unreachable (so: banner and retry), not a bug.

    Decided from the exception's type hierarchy (asyncpg and redis errors are recognised by class
    name, so the console never imports the drivers), never from message text.
    """
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return any(
        any(marker in cls.__name__ for marker in _CONNECTION_NAMES)
        for cls in type(exc).__mro__
        if cls.__module__.split(".")[0] in {"asyncpg", "redis", "worker"}
    )


def redact_url(url: str) -> str:
    """A connection URL without its password, safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))
