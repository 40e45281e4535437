"""Pure display helpers: durations, ages, status labels and styles, truncation, JSON.

No Textual imports and no clocks: every function that needs "now" takes it as an argument, so the
screens stay deterministic under a fixed clock and these helpers are testable on their own. The
helpers about workflow files (error locations, diff lines) are in console/workflow_text.py.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from worker.models import PauseInfo

if TYPE_CHECKING:
    from worker.client.pauses import WorkflowPause

DASH = "—"
ELLIPSIS = "…"

PAUSED_COLOUR = "medium_purple1"
"""Paused runs and workflows: apart from failed red, cancelled magenta, waiting yellow and running cyan."""

# status -> (glyph, rich style). Glyphs carry the meaning when colours are off (NO_COLOR).
_STATUS: dict[str, tuple[str, str]] = {
    "queued": ("⧗", "dim"),
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "retrying": ("↻", "yellow"),
    "waiting": ("◷", "yellow"),
    "paused": ("⏸", f"bold {PAUSED_COLOUR}"),
    "pausing": ("⏸", PAUSED_COLOUR),
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


_WAIT_KINDS = {"human": "⏸ human", "event": "◷ event", "sleep": "◷ sleep", "child": "◷ child", "retry": "↻ retrying",
               "throttled:": "◷ throttled"}  # waiting for capacity under a limit (worker/limits)


def wait_kind(waiting_on: str | None) -> str | None:
    """What a parked run waits for, as one word: `event customer.replied key T-42` -> `event`."""
    return waiting_on.split(" ", 1)[0] if waiting_on else None


def status_label(status: str, *, waiting_on: str | None = None) -> str:
    """`✓ completed`; for a parked run what it waits for: `⏸ human`, `◷ event`, `◷ sleep`, `↻ retrying` (backing
    off between attempts)."""
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


def pause_text(p: PauseInfo | WorkflowPause, now: datetime, *, short: bool = False) -> str:
    """A PauseInfo: `paused by alice 3m ago: reason`; a run's workflow's pause says so: `paused (workflow) by
    ...`. `short` (where the status already says paused): `by alice 3m ago: reason` (no `@host`)."""
    scope = "(workflow) " if getattr(p, "scope", "run") == "workflow" else ""
    who = p.by.split("@", 1)[0] if short else p.by  # short: the user, without where from
    age = format_age(p.at, now)
    head = f"{scope}by {who} {'just now' if age == 'now' else age}"
    text = head if short else f"paused {head}"
    return text + (f": {one_line(p.reason)}" if p.reason else "")


def retry_counts(waiting_on: str | None) -> str:
    """`retry 3/5` -> `3/5` (the next attempt of how many); `retry` (max unknown) -> ``."""
    return (waiting_on or "").removeprefix("retry").strip()


def retry_text(waiting_on: str | None, wake_at: datetime | None, error: str | None, now: datetime, *,
               short: bool = False) -> str:
    """A run backing off between attempts: `retrying 3/5 (next in 12s): HTTP 503 from ...`. `short` (where the
    status already says retrying): `3/5 in 12s: HTTP 503 from ...`."""
    counts = retry_counts(waiting_on)
    left = None if wake_at is None else (wake_at - now).total_seconds()
    when = "" if left is None else f"in {format_duration(left)}" if left > 0 else "due"
    if short:
        head = " ".join(part for part in (counts, when) if part)
    else:
        head = " ".join(part for part in ("retrying", counts) if part)
        head += "" if not when else f" (next {when})" if when != "due" else " (due)"
    return ": ".join(part for part in (head, one_line(error) if error else "") if part)


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


def format_short_timestamp(dt: datetime | None) -> str:
    """`03-14 12:00:03` (UTC): a history table's time column."""
    if dt is None:
        return DASH
    return dt.astimezone(UTC).strftime("%m-%d %H:%M:%S")


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
