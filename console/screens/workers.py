"""Workers: who is alive, how stale each heartbeat is, and which runs each one holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import format_age, format_duration, format_timestamp, short_id, truncate
from console.messages import WorkersChanged
from console.screens.base import ConsoleScreen
from console.widgets.nav_table import NavTable
from worker.models import WorkerInfo


class WorkersScreen(ConsoleScreen):
    MODE = "workers"
    CSS_PATH = "workers.tcss"
    AUTO_FOCUS = "#workers-table"
    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self) -> None:
        super().__init__()
        self.worker_infos: list[WorkerInfo] = []

    def compose_body(self) -> Iterable[Widget]:
        yield NavTable(id="workers-table")
        with VerticalScroll(id="worker-detail-scroll"):
            yield Static(id="worker-detail")

    def on_mount(self) -> None:
        table = self.query_one("#workers-table", NavTable)
        table.add_column("ALIVE", width=7, key="alive")
        table.add_column("WORKER", width=20, key="worker")
        table.add_column("HOST", width=10, key="host")
        table.add_column("PID", width=6, key="pid")
        table.add_column("BEAT", width=7, key="heartbeat")
        table.add_column("HELD", width=5, key="held")
        table.add_column("UP", key="uptime")

    async def reload(self) -> None:
        workers = await self.console_app.client.list_workers()
        self.worker_infos = sorted(workers, key=lambda w: (not w.alive, w.worker_id))
        self._render_table()

    def on_workers_changed(self, _message: WorkersChanged) -> None:
        self.request_reload()

    def _render_table(self) -> None:
        table = self.query_one("#workers-table", NavTable)
        keep = table.selected_key()
        table.clear()
        now = self.console_app.now()
        for w in self.worker_infos:
            held = f"{len(w.held_runs)}/{w.concurrency}" if w.concurrency else str(len(w.held_runs))
            table.add_row(
                Text("● alive", style="green") if w.alive else Text("○ dead", style="red"),
                Text(truncate(w.worker_id, 20), style="" if w.alive else "dim"),
                truncate(w.hostname, 10),
                str(w.pid),
                format_age(w.heartbeat_at, now).replace(" ago", ""),
                held,
                format_duration((now - w.started_at).total_seconds()) if w.alive else "—",
                key=w.worker_id,
            )
        table.restore_cursor(keep)
        self._render_detail()

    def _selected(self) -> WorkerInfo | None:
        key = self.query_one("#workers-table", NavTable).selected_key()
        return next((w for w in self.worker_infos if w.worker_id == key), None)

    @on(DataTable.RowHighlighted, "#workers-table")
    def _render_detail(self) -> None:
        w = self._selected()
        body = self.query_one("#worker-detail", Static)
        if w is None:
            body.update(Text("No workers have registered yet.", style="dim"))
            return
        now = self.console_app.now()
        out = Text()
        out.append(w.worker_id, style="bold")
        out.append("  alive\n" if w.alive else "  not alive (heartbeat lease expired)\n",
                   style="green" if w.alive else "red")
        out.append(f"host {w.hostname} · pid {w.pid} · concurrency {w.concurrency or '—'}\n")
        out.append(f"started {format_timestamp(w.started_at)} · last heartbeat "
                   f"{format_timestamp(w.heartbeat_at)} ({format_age(w.heartbeat_at, now)})\n")
        if w.held_runs:
            out.append(f"holds {len(w.held_runs)} run(s): ", style="bold")
            out.append(", ".join(short_id(r) for r in w.held_runs[:20]))
            if len(w.held_runs) > 20:
                out.append(f" … and {len(w.held_runs) - 20} more")
            out.append("\n")
        else:
            out.append("holds no runs\n", style="dim")
        body.update(out)
