"""Events: the live feed as it arrives (newest first), to see that the runtime is moving."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import compact_json, item_suffix, short_id, status_style, truncate
from console.messages import FeedAppended
from console.screens.base import ConsoleScreen
from console.widgets.nav_table import NavTable
from worker.models import LiveEvent


def _style(event: LiveEvent) -> str:
    if event.type.endswith(("failed", "invalid")):
        return "red"
    if event.type.endswith("completed"):
        return "green"
    if event.type.endswith(("waiting", "requested")):
        return "yellow"
    return ""


class EventsScreen(ConsoleScreen):
    MODE = "events"
    CSS_PATH = "events.tcss"
    AUTO_FOCUS = "#events-feed"
    USES_CLIENT = False
    BINDINGS: ClassVar[list[BindingType]] = []

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="events-info")
        yield NavTable(id="events-feed")

    def on_mount(self) -> None:
        table = self.query_one("#events-feed", NavTable)
        table.add_column("TYPE", width=18, key="type")
        table.add_column("RUN", width=8, key="run")
        table.add_column("STEP", width=14, key="step")
        table.add_column("STATUS", width=9, key="status")
        table.add_column("DATA", key="data")

    async def reload(self) -> None:
        self._render_feed()

    def on_feed_appended(self, _message: FeedAppended) -> None:
        self.request_reload()

    def _render_feed(self) -> None:
        app = self.console_app
        table = self.query_one("#events-feed", NavTable)
        keep = table.selected_key()
        table.clear()
        width = max(12, self.size.width - 63)
        events = list(app.recent_events)
        first = app.events_seen - len(events)
        for offset, e in reversed(list(enumerate(events))):
            data = e.data if isinstance(e.data, dict) else {}
            step = f"{data.get('step') or ''}{item_suffix(data.get('item'))}" if data.get("step") else ""
            status = str(data.get("status") or "")
            rest = {k: v for k, v in data.items() if k not in ("step", "item", "status", "seq", "ts")}
            table.add_row(Text(truncate(e.type, 18), style=_style(e)), short_id(e.run_id) if e.run_id else "",
                          truncate(step, 14), Text(status, style=status_style(status)), compact_json(rest, width),
                          key=str(first + offset))
        table.restore_cursor(keep)
        self.query_one("#events-info", Static).update(
            Text(f"{app.events_seen} live events received since start; newest first (last {len(events)} kept)",
                 style="dim"))

    def _selected(self) -> LiveEvent | None:
        key = self.query_one("#events-feed", NavTable).selected_key()
        if key is None:
            return None
        app = self.console_app
        index = int(key) - (app.events_seen - len(app.recent_events))
        return app.recent_events[index] if 0 <= index < len(app.recent_events) else None

    @on(DataTable.RowSelected, "#events-feed")
    def _open(self) -> None:
        event = self._selected()
        if event is not None and event.run_id:
            self.console_app.open_run(event.run_id)
