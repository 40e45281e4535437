"""Workflows: every definition file, its active version, and why an invalid one was refused."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import (
    DASH,
    format_age,
    format_timestamp,
    short_id,
    status_label,
    status_style,
    truncate,
    workflow_location,
    workflow_summary,
)
from console.messages import WorkflowsChanged
from console.screens.base import ConsoleScreen
from console.widgets.nav_table import NavTable
from worker.models import WorkflowInfo


class WorkflowsScreen(ConsoleScreen):
    MODE = "workflows"
    CSS_PATH = "workflows.tcss"
    AUTO_FOCUS = "#workflows-table"
    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self) -> None:
        super().__init__()
        self.workflows: list[WorkflowInfo] = []

    def compose_body(self) -> Iterable[Widget]:
        yield NavTable(id="workflows-table")
        with VerticalScroll(id="workflow-detail-scroll"):
            yield Static(id="workflow-detail")

    def on_mount(self) -> None:
        table = self.query_one("#workflows-table", NavTable)
        table.add_column("STATUS", width=9, key="status")
        table.add_column("NAME", width=18, key="name")
        table.add_column("VERSION", width=8, key="version")
        table.add_column("VERS", width=4, key="versions")
        table.add_column("FILE / ERROR", key="file")

    async def reload(self) -> None:
        workflows = await self.console_app.client.list_workflows()
        # invalid files first: they are what someone is looking for
        self.workflows = sorted(workflows, key=lambda w: (w.status != "invalid", w.status != "active",
                                                          w.name is None, w.name or "", w.path))
        self._render_table()

    def on_workflows_changed(self, _message: WorkflowsChanged) -> None:
        self.request_reload()

    def _render_table(self) -> None:
        table = self.query_one("#workflows-table", NavTable)
        keep = table.selected_key()
        table.clear()
        width = max(16, self.size.width - 54)
        for w in self.workflows:
            invalid = w.status == "invalid"
            row_style = "red" if invalid else ("dim" if w.status == "deleted" else "")
            table.add_row(
                Text(status_label(w.status), style=status_style(w.status)),
                Text(truncate(w.name or DASH, 18), style=row_style or "bold"),
                Text(short_id(w.def_hash), style="dim"),
                str(w.versions),
                Text(workflow_summary(w, width), style=row_style),
                key=w.path,
            )
        table.restore_cursor(keep)
        self._render_detail()

    def _selected(self) -> WorkflowInfo | None:
        key = self.query_one("#workflows-table", NavTable).selected_key()
        return next((w for w in self.workflows if w.path == key), None)

    @on(DataTable.RowHighlighted, "#workflows-table")
    def _render_detail(self) -> None:
        w = self._selected()
        body = self.query_one("#workflow-detail", Static)
        if w is None:
            body.update(Text("No workflow files found.", style="dim"))
            return
        now = self.console_app.now()
        out = Text()
        out.append(f"{w.name or DASH}", style="bold")
        out.append(f"  {status_label(w.status)}\n", style=status_style(w.status))
        out.append(f"file     {w.path}\n")
        out.append(f"version  {w.def_hash or DASH}  ({w.versions} version{'s' if w.versions != 1 else ''})\n")
        out.append(f"updated  {format_timestamp(w.updated_at)} ({format_age(w.updated_at, now)})\n")
        if w.error:
            out.append(f"\n{workflow_location(w)}\n", style="bold red")
            out.append(f"{w.error}\n", style="red")
            if w.status == "invalid" and w.def_hash:
                out.append("The previous version stays active for new runs.\n", style="dim")
        body.update(out)
