"""Workflows: every definition file, its active version and earlier ones, why an invalid one was refused
(file:line and the offending line), and the hot-reload history as it happens. `d` diffs two versions; `p`
pauses a workflow (every unfinished run of it, and those started while it is paused) or resumes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import (
    DASH,
    PAUSED_COLOUR,
    describe_error,
    format_age,
    format_short_timestamp,
    format_timestamp,
    is_connection_error,
    pause_text,
    short_id,
    status_label,
    status_style,
    truncate,
)
from console.messages import WorkflowsChanged
from console.screens.base import ConsoleScreen, guarded
from console.screens.pausing import toggle_workflow_pause
from console.screens.workflow_diff import WorkflowDiffScreen
from console.widgets.nav_table import NavTable
from console.workflow_text import excerpt_window, reload_summary, workflow_location, workflow_summary
from worker.client.pauses import WorkflowPause
from worker.errors import WorkerError
from worker.models import WorkflowEvent, WorkflowInfo, WorkflowVersion

HISTORY_LIMIT = 200
"""Hot-reload events shown (newest first)."""
VERSIONS_LIMIT = 50
"""Versions listed in the detail pane (newest first)."""
WIDE = 120
"""From this many columns, the detail and the reload history sit side by side."""


class WorkflowsScreen(ConsoleScreen):
    MODE = "workflows"
    CSS_PATH = "workflows.tcss"
    AUTO_FOCUS = "#workflows-table"
    # wide terminals put the detail and the reload history side by side (Textual declares this attribute
    # without ClassVar, so annotating it here would be an incompatible override)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "diff", "Diff versions"),
        *guarded("p", "toggle_pause", "Pause/resume"),
        Binding("h", "toggle_history", "History"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.workflows: list[WorkflowInfo] = []
        self.history: list[WorkflowEvent] = []
        self.versions: dict[str, list[WorkflowVersion] | str] = {}
        """Workflow name -> its versions (newest first), or why they could not be read; refreshed by reload."""
        self.pauses: dict[str, WorkflowPause] = {}
        """The paused workflows, by name: who paused them, when, why, their runs held."""

    def compose_body(self) -> Iterable[Widget]:
        yield NavTable(id="workflows-table")
        with Container(id="workflow-lower"):
            with VerticalScroll(id="workflow-detail-scroll"):
                yield Static(id="workflow-detail")
            with Vertical(id="workflow-history"):
                yield Static(id="workflow-history-title")
                yield NavTable(id="workflow-history-table")

    def on_mount(self) -> None:
        table = self.query_one("#workflows-table", NavTable)
        table.add_column("STATUS", width=9, key="status")
        table.add_column("NAME", width=18, key="name")
        table.add_column("VERSION", width=8, key="version")
        table.add_column("VERS", width=4, key="versions")
        table.add_column("FILE / ERROR", key="file")
        history = self.query_one("#workflow-history-table", NavTable)
        history.add_column("TIME (UTC)", width=14, key="at")
        history.add_column("KIND", width=9, key="kind")
        history.add_column("WORKFLOW", width=14, key="name")
        history.add_column("FILE / ERROR", key="what")

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        client = self.console_app.client
        workflows, history, pauses = await asyncio.gather(client.list_workflows(),
                                                          client.workflow_events(HISTORY_LIMIT),
                                                          client.paused_workflows())
        self.pauses = {p.workflow: p for p in pauses}
        # invalid files first: they are what someone is looking for
        self.workflows = sorted(workflows, key=lambda w: (w.status != "invalid", w.status != "active",
                                                          w.name is None, w.name or "", w.path))
        self.history = history
        self._render_table()
        self._render_history()
        # a change may have added a version: read the selected workflow's again (others when selected)
        selected = self._selected()
        fresh: dict[str, list[WorkflowVersion] | str] = {}
        if selected is not None and selected.name:
            fresh[selected.name] = await self._fetch_versions(selected.name)
        self.versions = fresh
        now = self._selected()  # the cursor may have moved meanwhile
        if now is not None and now.name and now.name not in fresh:
            self.load_versions(now.name)
        self._render_detail()

    async def _fetch_versions(self, name: str) -> list[WorkflowVersion] | str:
        try:
            return await self.console_app.client.workflow_versions(name, limit=VERSIONS_LIMIT)
        except WorkerError as exc:  # not found (yet), not allowed: said in the pane, not as a popup
            return str(exc)

    @work(group="versions", exclusive=True, exit_on_error=False)
    async def load_versions(self, name: str) -> None:
        """The versions of a workflow just selected (off the UI path)."""
        try:
            found = await self._fetch_versions(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - banner for an outage, else a line in the pane
            if is_connection_error(exc):
                self.console_app.report_error(exc)
            found = f"Could not read the versions: {describe_error(exc, 200)}"
        self.versions[name] = found
        self._render_detail()

    def on_workflows_changed(self, _message: WorkflowsChanged) -> None:
        self.request_reload()

    # -- files table and detail --------------------------------------------------------------
    def _render_table(self) -> None:
        table = self.query_one("#workflows-table", NavTable)
        keep = table.selected_key()
        table.clear()
        width = max(16, self.size.width - 54)
        now = self.console_app.now()
        for w in self.workflows:
            invalid = w.status == "invalid"
            row_style = "red" if invalid else ("dim" if w.status == "deleted" else "")
            pause = self.pauses.get(w.name) if w.name else None
            status = "paused" if pause is not None and not invalid else w.status
            summary = (Text(truncate(pause_text(pause, now, short=True), width), style=PAUSED_COLOUR)
                       if pause is not None and not invalid else Text(workflow_summary(w, width), style=row_style))
            table.add_row(
                Text(status_label(status), style=status_style(status)),
                Text(truncate(w.name or DASH, 18), style=row_style or "bold"),
                Text(short_id(w.def_hash), style="dim"),
                str(w.versions),
                summary,
                key=w.path,
            )
        table.restore_cursor(keep)
        self._render_detail()

    def _selected(self) -> WorkflowInfo | None:
        key = self.query_one("#workflows-table", NavTable).selected_key()
        return next((w for w in self.workflows if w.path == key), None)

    @on(DataTable.RowHighlighted, "#workflows-table")
    def _highlighted(self) -> None:
        w = self._selected()
        if w is not None and w.name and w.name not in self.versions and self.loaded:
            self.load_versions(w.name)
        self._render_detail()

    def _render_detail(self) -> None:
        w = self._selected()
        body = self.query_one("#workflow-detail", Static)
        if w is None:
            body.update(Text("No workflow files found.", style="dim"))
            return
        width = max(20, (body.size.width or self.size.width) - 2)
        now = self.console_app.now()
        out = Text()
        out.append(f"{w.name or DASH}", style="bold")
        out.append(f"  {status_label(w.status)}\n", style=status_style(w.status))
        pause = self.pauses.get(w.name) if w.name else None
        if pause is not None:  # first: it is why its runs do not move
            out.append(f"{pause_text(pause, now)}\n", style=f"bold {PAUSED_COLOUR}")
            runs = f"{pause.runs} unfinished run{'s' if pause.runs != 1 else ''}"
            now_ = " · steps in flight were interrupted" if pause.now else ""
            out.append(f"since {format_timestamp(pause.at)} · {runs} held, {pause.parked} parked · new runs wait"
                       f"{now_} · p resume\n", style=PAUSED_COLOUR)
        if w.error:  # first: at 80x24 the problem must be visible without scrolling
            out.append(f"{workflow_location(w)}\n", style="bold red")
            out.append(f"{w.error}\n", style="red")
            if w.excerpt is not None:
                self._append_excerpt(out, w, width)
            if w.status == "invalid" and w.def_hash:
                out.append(f"The previous version ({short_id(w.def_hash)}) stays active for new runs.\n",
                           style="dim")
        out.append(f"file     {w.path}\n")
        out.append(f"updated  {format_timestamp(w.updated_at)} ({format_age(w.updated_at, now)})\n")
        if w.name:
            self._append_versions(out, w)
        out.append(f"version  {w.def_hash or DASH}  ({w.versions} version{'s' if w.versions != 1 else ''})\n")
        out.rstrip()
        body.update(out)

    @staticmethod
    def _append_excerpt(out: Text, w: WorkflowInfo, width: int) -> None:
        """The offending line under a line-number gutter, a caret under the column."""
        gutter = f"{w.error_line if w.error_line is not None else '':>5} │ "
        line, caret = excerpt_window(w.excerpt or "", w.error_column, width - len(gutter))
        out.append(gutter, style="dim")
        out.append(line + "\n", style="bold")
        if caret is not None:
            out.append(" " * 6 + "│ ", style="dim")
            out.append(" " * caret + "^ here\n", style="bold red")

    def _append_versions(self, out: Text, w: WorkflowInfo) -> None:
        assert w.name is not None
        found = self.versions.get(w.name)
        out.append("VERSIONS", style="bold")
        hint = " · d diff previous → active" if isinstance(found, list) and len(found) > 1 else ""
        out.append(f"  newest first{hint}\n", style="dim")
        if found is None:
            out.append("loading…\n", style="dim")
            return
        if isinstance(found, str):
            out.append(f"{found}\n", style="red")
            return
        for v in found:
            runs = f"{v.runs} run{'s' if v.runs != 1 else ''}"
            out.append("* " if v.active else "  ", style="bold green")
            out.append(f"{short_id(v.def_hash)}  ", style="bold" if v.active else "")
            out.append(f"{format_timestamp(v.created_at)}  {runs:>9}")
            out.append("  active\n" if v.active else "\n", style="bold green")
        if w.versions > len(found):
            out.append(f"… and {w.versions - len(found)} older\n", style="dim")
        out.append("\n")

    # -- reload history ------------------------------------------------------------------------
    def _render_history(self) -> None:
        table = self.query_one("#workflow-history-table", NavTable)
        keep = table.selected_key()
        table.clear()
        width = max(16, self._history_width() - 48)
        for e in self.history:
            kind_style = status_style("invalid" if e.kind == "invalid" else e.kind)
            table.add_row(
                Text(format_short_timestamp(e.at), style="dim"),
                Text(status_label(e.kind), style=kind_style),
                Text(truncate(e.name or DASH, 14), style="bold" if e.name else "dim"),
                Text(reload_summary(e, width), style="red" if e.kind == "invalid" else ""),
                key=str(e.id),
            )
        table.restore_cursor(keep)
        invalid = sum(1 for e in self.history if e.kind == "invalid")
        title = Text("RELOAD HISTORY", style="bold")
        title.append(f"  newest first · {len(self.history)} event{'s' if len(self.history) != 1 else ''}"
                     f"{f', {invalid} invalid' if invalid else ''} · live · h focus", style="dim")
        self.query_one("#workflow-history-title", Static).update(title)

    def _history_width(self) -> int:
        """The history pane's width: the screen's, or half of it when wide (see HORIZONTAL_BREAKPOINTS)."""
        return self.size.width // 2 if self.size.width >= WIDE else self.size.width

    def on_resize(self) -> None:
        if self.loaded:
            self._render_table()
            self._render_history()

    @on(DataTable.RowSelected, "#workflow-history-table")
    def _history_selected(self) -> None:
        """Enter on a history row: select its file in the files table."""
        key = self.query_one("#workflow-history-table", NavTable).selected_key()
        event = next((e for e in self.history if str(e.id) == key), None)
        table = self.query_one("#workflows-table", NavTable)
        if event is None or not any(w.path == event.path for w in self.workflows):
            self.notify("That file is no longer listed.", timeout=3)
            return
        table.move_cursor(row=table.get_row_index(event.path), animate=False)
        table.focus()

    # -- actions -----------------------------------------------------------------------------
    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_toggle_pause(self) -> None:
        """`p`: pause the selected workflow (a reason is required), or resume it when paused."""
        w = self._selected()
        if w is None or not w.name:
            what = f"{workflow_location(w)} never loaded: it has no runs to pause." if w else "No workflow selected."
            self.notify(what, severity="warning", timeout=5)
            return
        await toggle_workflow_pause(self, w.name, self.pauses.get(w.name))
        self.request_reload()

    def action_toggle_history(self) -> None:
        history = self.query_one("#workflow-history-table", NavTable)
        if history.has_focus:
            self.query_one("#workflows-table", NavTable).focus()
        else:
            history.focus()

    def action_diff(self) -> None:
        w = self._selected()
        if w is None:
            return
        if not w.name:
            self.notify(f"{workflow_location(w)} never loaded: it has no versions to compare.", timeout=5)
            return
        found = self.versions.get(w.name)
        versions = found if isinstance(found, list) else []
        if isinstance(found, list) and len(found) < 2:
            self.notify(f"{w.name} has only one version: nothing to compare it with.", timeout=5)
            return
        self.app.push_screen(WorkflowDiffScreen(w.name, versions))
