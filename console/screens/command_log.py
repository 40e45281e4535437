"""`L`: the command log, every action this console session took and how it went (console/command_log.py).

Newest first: time (UTC), action, target, result (`✓` ok, `↷` skipped, `✗` the error). The selected entry is
shown in full below (the reason or arguments it was given, the whole result). New actions appear as they
finish, also while the log is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from console.command_log import LOG_SIZE, LogEntry, Outcome
from console.formatting import format_clock, format_timestamp, truncate
from console.widgets.nav_table import NavTable

if TYPE_CHECKING:
    from console.app import AgentConsole

MARKS: dict[Outcome, tuple[str, str]] = {"ok": ("✓", "green"), "skipped": ("↷", "yellow"), "error": ("✗", "bold red")}


def result_text(entry: LogEntry, width: int) -> Text:
    """`✓ new run 2b9d8c1e`, `↷ the current version cannot…`, `✗ run 4f41cccd is already paused (by oscar)`."""
    mark, style = MARKS[entry.outcome]
    out = Text(f"{mark} ", style=style)
    out.append(truncate(entry.result, max(4, width - 2)), style="red" if entry.outcome == "error" else "")
    return out


def entry_detail(entry: LogEntry) -> Text:
    """One entry in full, for the pane under the table."""
    mark, style = MARKS[entry.outcome]
    out = Text()
    out.append(f"#{entry.seq}  {format_timestamp(entry.at)}  ", style="dim")
    out.append(f"{entry.action}  ", style="bold")
    out.append(entry.target + "\n")
    if entry.detail:
        out.append("given    ", style="dim")
        out.append(entry.detail + "\n")
    out.append("result   ", style="dim")
    out.append(f"{mark} {entry.outcome}: ", style=style)
    out.append(entry.result, style="red" if entry.outcome == "error" else "")
    return out


class CommandLogged(Message, bubble=False):
    """A new entry in the command log."""


class CommandLogScreen(ModalScreen[None]):
    """Keys: j/k move · esc, L or q close."""

    CSS_PATH = "command_log.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,L,q", "close", "Close")]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[LogEntry] = []

    @property
    def console_app(self) -> AgentConsole:
        return cast("AgentConsole", self.app)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("", id="title")
            yield NavTable(id="log-table")
            yield Static(id="log-detail")
            yield Label("j/k move · esc close  (this session only: the audit log keeps the record)", id="hint")

    def on_mount(self) -> None:
        table = self.query_one("#log-table", NavTable)
        table.add_column("TIME", width=8, key="at")
        table.add_column("ACTION", width=15, key="action")
        table.add_column("TARGET", width=20, key="target")
        table.add_column("RESULT", key="result")
        self.console_app.command_log.subscribe(self._logged)
        self._render_entries()
        table.focus()

    def on_unmount(self) -> None:
        self.console_app.command_log.unsubscribe(self._logged)

    def _logged(self, _entry: LogEntry) -> None:
        self.post_message(CommandLogged())

    def on_command_logged(self, _message: CommandLogged) -> None:
        self._render_entries()

    def on_resize(self) -> None:
        self._render_entries()

    def _render_entries(self) -> None:
        log = self.console_app.command_log
        self.entries = log.entries
        table = self.query_one("#log-table", NavTable)
        keep = table.selected_key()
        table.clear()
        width = max(12, (table.size.width or min(150, self.size.width) - 6) - 52)  # the columns before, padding
        for entry in self.entries:
            table.add_row(Text(format_clock(entry.at), style="dim"), truncate(entry.action, 15),
                          truncate(entry.target, 20), result_text(entry, width), key=str(entry.seq))
        table.restore_cursor(keep)
        n = len(self.entries)
        title = Text("COMMAND LOG", style="bold")
        kept = f" (the last {LOG_SIZE} of {log.count})" if log.count > n else ""
        errors = sum(1 for e in self.entries if e.outcome == "error")
        title.append(f"  this session · newest first · {n} action{'s' if n != 1 else ''}{kept}"
                     f"{f', {errors} failed' if errors else ''}", style="dim")
        self.query_one("#title", Label).update(title)
        self._render_detail()

    @on(DataTable.RowHighlighted, "#log-table")
    def _render_detail(self) -> None:
        key = self.query_one("#log-table", NavTable).selected_key()
        entry = next((e for e in self.entries if str(e.seq) == key), None)
        body = self.query_one("#log-detail", Static)
        if entry is not None:
            body.update(entry_detail(entry))
        else:
            body.update(Text("Nothing done yet in this session. Each action taken here (approve, reject, resolve, "
                             "replay, retry, cancel, pause, resume, send-event, schedule pause/resume) is listed "
                             "with its result.", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
