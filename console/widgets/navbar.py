"""The one-line screen switcher at the top, and the connection banner under it."""

from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import Static

# (mode, key, label) in key order; the app's MODES use the same names.
SCREENS: tuple[tuple[str, str, str], ...] = (
    ("runs", "1", "Runs"),
    ("approvals", "2", "Approvals"),
    ("workflows", "3", "Workflows"),
    ("workers", "4", "Workers"),
    ("events", "5", "Events"),
    ("schedules", "6", "Schedules"),
    ("limits", "7", "Limits"),
)
SHORT_LABELS = {"workers": "Wrk", "events": "Evt", "schedules": "Sched", "limits": "Lim"}
"""Labels shortened when even the tight layout does not fit (80 columns)."""


class NavBar(Static):
    """`1 Runs  2 Approvals (2)  3 Workflows (1✗) …`; click a name or press its number.

    Each tab is padded (`▌ 1 Runs ▐`) when they all fit; on narrower terminals they sit one space apart,
    and then some labels are shortened, so the connection state on the right stays visible at 80 columns
    (with READ-ONLY too, the tabs are cut)."""

    DEFAULT_CSS = """
    NavBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, active: str) -> None:
        super().__init__()
        self.active = active

    def on_mount(self) -> None:
        self.watch(self.app, "nav_counts", self._changed, init=False)
        self.watch(self.app, "offline_reason", self._changed, init=False)
        self.watch(self.app, "health", self._changed, init=False)
        self._changed()

    def _changed(self, *_: Any) -> None:
        self.update(self._content())

    def on_resize(self) -> None:
        self._changed()

    def _tabs(self, *, tight: bool, short: bool) -> Content:
        counts: dict[str, int] = getattr(self.app, "nav_counts", {})
        parts: list[Content] = []
        for mode, key, label in SCREENS:
            extra = ""
            if mode == "approvals" and counts.get("approvals"):
                extra = f" ({counts['approvals']})"
            elif mode == "workflows" and counts.get("invalid"):
                extra = f" ({counts['invalid']}✗)"
            elif mode == "runs" and counts.get("active"):
                extra = f" ({counts['active']})"
            label = SHORT_LABELS.get(mode, label) if short else label
            active = mode == self.active
            text = f" {key} {label}{extra} " if active or not tight else f"{key} {label}{extra}"
            style = "reverse bold " if active else ""
            parts.append(Content.from_markup(f"[{style}@click=app.switch_mode('{mode}')]{text}[/]"))
        return Content(" " if tight else "").join(parts)

    def _content(self) -> Content:
        right: list[str] = []
        if getattr(self.app, "readonly", False):
            right.append("READ-ONLY")
        health: dict[str, str | None] = getattr(self.app, "health", {})
        if getattr(self.app, "offline_reason", None) or health.get("postgres"):
            right.append("○ offline")
        elif health.get("redis"):
            right.append("◐ no feed")
        else:
            right.append("● live")
        tail = Content.styled("  ".join(right) + " ", "bold")
        room = self.size.width - tail.cell_length - 1
        left = self._tabs(tight=False, short=False)
        for tight, short in ((True, False), (True, True)):
            if left.cell_length <= room:
                break
            left = self._tabs(tight=tight, short=short)
        if left.cell_length > room > 0:  # READ-ONLY and the connection state stay visible; the tabs are cut
            left = left.truncate(room, ellipsis=True)
        gap = max(1, self.size.width - left.cell_length - tail.cell_length)
        return Content.assemble(left, " " * gap, tail)


def banner_text(offline_reason: str | None, health: dict[str, str | None]) -> Content | None:
    """Which of Postgres/Redis is down, from the last failed reload and the last health check."""
    postgres = health.get("postgres") or None
    redis = health.get("redis") or None
    if postgres and redis:
        return Content.assemble(("⚠ Postgres and Redis unreachable — retrying", "bold"),
                                f"  {offline_reason or postgres}")
    if postgres or offline_reason:
        return Content.assemble(("⚠ Postgres unreachable — retrying", "bold"), f"  {offline_reason or postgres}")
    if redis:
        return Content.assemble(("⚠ Redis unreachable — no live updates, reloading from Postgres", "bold"),
                                f"  {redis}")
    return None


class ConnectionBanner(Static):
    """Shown only while Postgres or Redis is unreachable; the console keeps retrying by itself."""

    DEFAULT_CSS = """
    ConnectionBanner { height: auto; width: 1fr; display: none; background: $error; color: $text; }
    ConnectionBanner.-visible { display: block; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "offline_reason", self._changed)
        self.watch(self.app, "health", self._changed)

    def _changed(self, *_: Any) -> None:
        text = banner_text(getattr(self.app, "offline_reason", None), getattr(self.app, "health", {}))
        self.set_class(text is not None, "-visible")
        if text is not None:
            self.update(text)
