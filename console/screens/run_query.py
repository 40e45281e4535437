"""The runs screen's filter line and saved views: what was typed (parsed by console/run_query.py), the line under
the info line (a filter's error, the saved views, what a command did), and `:view` / `:save` through the client
(worker/search: the views `agentrt runs --save-view` saves, shared by the team)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rich.text import Text
from textual import on, work
from textual.widgets import Input

from console.filtering import StatusTab, TextFilter, parse_tab
from console.formatting import describe_error, truncate
from console.run_query import (
    COMMANDS_HELP,
    EMPTY,
    QueryError,
    RunQuery,
    describe,
    format_query,
    is_command,
    parse_command,
    parse_query,
    same_filter,
)
from console.screens.base import ConsoleScreen
from console.widgets.nav_table import NavTable
from worker.errors import WorkerError
from worker.search.filters import RunFilter
from worker.search.views import SavedView

MessageKind = Literal["error", "info", "hint", "list"]
MAX_LISTED = 8
"""Saved views `:view` lists under the info line (then `… and N more`)."""


@dataclass
class QueryState:
    """The filter line in force, the view it came from, and what the line under the info line says."""

    line: str = ""
    """The last filter line that parsed (the one in force)."""
    query: RunQuery = EMPTY
    error: str | None = None
    """Why the line being typed cannot be used (the last good one stays in force)."""
    view: SavedView | None = None
    before_view: StatusTab = None
    """The status tab before a view chose one (esc goes back to it)."""
    message: list[str] = field(default_factory=list)
    kind: MessageKind = "info"

    def set_line(self, line: str) -> Literal["same", "ok", "error"]:
        """Parse `line`: "ok" when it is now the filter in force, "error" (and why in `error`), "same"."""
        if line == self.line and self.error is None:
            return "same"
        try:
            self.query = parse_query(line)
        except QueryError as exc:
            self.error = str(exc)
            self.say([f"✗ {exc}"], "error")
            return "error"
        self.line, self.error = line, None
        self.say([])
        return "ok"

    def say(self, lines: list[str], kind: MessageKind = "info") -> None:
        self.message, self.kind = lines, kind

    def tab(self, chosen: StatusTab) -> StatusTab:
        """The status in force: a `status:` term's, else the chosen tab."""
        status = self.query.terms.status
        return parse_tab(status) if status else chosen

    def filters(self, chosen: StatusTab) -> RunFilter:
        tab = self.tab(chosen)
        return self.query.filters(str(tab) if tab is not None else None)

    def without_status(self) -> str:
        """The line in force without its `status:` term (the tab takes over)."""
        return format_query(self.query.filters(), skip=("status",))

    def info(self, chosen: StatusTab, width: int) -> list[str]:
        """The info line's parts for the view and the terms in force."""
        parts = []
        filters = self.filters(chosen)
        if self.view is not None:
            changed = not same_filter(self.view.filters, filters)
            parts.append(f"view {self.view.name}" + (" (changed)" if changed else ""))
        if self.query.has_terms:  # room left after `N shown of M · `, the view and `filter: `
            room = width - 20 - sum(len(p) + 3 for p in parts) - 8
            parts.append(f"filter: {truncate(describe(filters), max(20, room))}")
        return parts

    def message_text(self) -> Text:
        style = {"error": "bold red", "hint": "dim", "list": "", "info": "green"}[self.kind]
        return Text("\n".join(self.message), style=style, no_wrap=True, overflow="ellipsis")


def view_list(views: list[SavedView], width: int) -> list[str]:
    """The saved views, one a line: name, filters, who saved it."""
    if not views:
        return ["no saved views yet: :save NAME saves the filter in force for everyone"]
    name_width = min(24, max(len(v.name) for v in views))
    lines = [f"saved views (:view NAME applies one, esc cancels): {len(views)}"]
    for v in views[:MAX_LISTED]:
        rest = truncate(f"{v.filters.describe()} · saved by {v.created_by}", width - name_width - 8)
        lines.append(f"  {v.name:<{name_width}}  {rest}")
    if len(views) > MAX_LISTED:
        lines.append(f"  … and {len(views) - MAX_LISTED} more")
    return lines


def view_status(view: SavedView) -> StatusTab:
    """The tab a view chooses (ValueError for a status the console has no tab for)."""
    return parse_tab(view.filters.status) if view.filters.status else None


class RunsQueryScreen(ConsoleScreen):
    """The runs screen's filter box and saved views (the list itself: console/screens/runs.py). `/` edits the line
    in force, `:` starts a command in the same box; esc clears the line and the view."""

    def __init__(self) -> None:
        super().__init__()
        self.status: StatusTab = None
        """The chosen status tab (`s`, a click, a view)."""
        self.text_filter = TextFilter.parse("")
        """The free text of the line in force (a regex)."""
        self.invalid_regex = False
        """Postgres refused the filter as a regex: it is matched literally, here."""
        self.q = QueryState()

    def render_runs(self) -> None:
        raise NotImplementedError

    def _render_header(self) -> None:
        raise NotImplementedError

    @property
    def tab(self) -> StatusTab:
        """The status in force: a `status:` term's, else the chosen tab."""
        return self.q.tab(self.status)

    def current_filter(self) -> RunFilter:
        """Everything the list is filtered by: the terms, the status in force, the search text."""
        return self.q.filters(self.status)

    def action_filter(self) -> None:
        self.edit_box(self.q.line)

    def action_command(self) -> None:
        """`:`: the filter box as a command line (`:view NAME`, `:view`, `:save NAME`)."""
        self.edit_box(":")

    def edit_box(self, value: str) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("-visible")
        box.value = value
        box.select_on_focus = not is_command(value)  # `/`: typing replaces the line; `:`: goes on after it
        box.cursor_position = len(value)
        box.focus()

    def _close_box(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.remove_class("-visible")
        box.value = self.q.line
        self.query_one("#runs-table", NavTable).focus()

    def tell(self, lines: list[str], kind: MessageKind = "info") -> None:
        """Say `lines` under the info line (an error, the saved views, what a command did)."""
        self.q.say(lines, kind)
        self._render_header()

    def _use_line(self, line: str) -> None:
        """Filter by `line` if it parses (else the error line says why and the last good line stays in force)."""
        if self.q.set_line(line) == "ok":
            self.text_filter = TextFilter.parse(self.q.query.text)
            self.invalid_regex = False
            self.render_runs()  # a local preview now, the server's answer right after
            self.request_reload()
        else:
            self._render_header()

    def drop_status_term(self) -> None:
        """A chosen tab replaces the `status:` term of the line in force."""
        if self.q.query.terms.status is not None:
            self._use_line(self.q.without_status())
            self.query_one("#runs-filter", Input).value = self.q.line

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if not is_command(event.value):
            self._use_line(event.value)
        elif self.q.kind not in ("list", "info") or not self.q.message:
            self.tell([COMMANDS_HELP], "hint")  # run on enter

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if is_command(event.value):
            self.run_command(event.value)
        elif self.q.error is None:  # else it stays open: the line under the info says what to fix
            self._close_box()

    @work(group="query", exclusive=True, exit_on_error=False)
    async def run_command(self, line: str) -> None:
        """`:view NAME`, `:view` or `:save NAME`; what came of it under the info line."""
        try:
            command = parse_command(line)
        except QueryError as exc:
            self.tell([f"✗ {exc}"], "error")
            return
        if command.name == "save" and self.console_app.readonly:
            self.tell(["✗ read-only console: :save is disabled (views are shared: saving one changes the runtime)"],
                      "error")
            return
        client = self.console_app.client
        try:
            if command.name == "save" and command.arg is not None:
                self.apply_view(await client.save_view(command.arg, self.current_filter()), saved=True)
            elif command.arg is None:
                self.tell(view_list(await client.list_views(), self.size.width), "list")
                self.edit_box(":view ")
            else:
                self.apply_view(await client.get_view(command.arg))
        except WorkerError as exc:  # not found (the saved ones named), a bad name, not allowed
            self.tell([f"✗ {exc}"], "error")
        except Exception as exc:  # noqa: BLE001 - unreachable runtime: the banner, and why here
            self.console_app.report_error(exc)
            self.tell([f"✗ {describe_error(exc, 200)}"], "error")

    def apply_view(self, view: SavedView, *, saved: bool = False) -> None:
        """Filter by `view` (its status as the tab, the rest as the `/` line), or mark it saved from this line."""
        try:
            status = view_status(view)
        except ValueError:
            self.tell([f"✗ view {view.name}: {view.filters.status!r} is not a status this console has"], "error")
            return
        if self.q.view is None:
            self.q.before_view = self.status
        self.q.view = view
        if not saved:
            self.status = status
            self._use_line(format_query(view.filters, skip=("status",)))
        self.tell([f"saved view {view.name}: {view.filters.describe()}"] if saved else [])
        self._close_box()
        self.request_reload()

    def clear_query(self) -> bool:
        """esc: cancel a command being typed, else clear the line and the view (back to the tab before it);
        False when there was nothing to clear."""
        box = self.query_one("#runs-filter", Input)
        if box.has_class("-visible") and is_command(box.value):
            self.tell([])
            self._close_box()
            return True
        if not (box.has_class("-visible") or self.q.line or self.q.view is not None or self.q.error):
            return False
        if self.q.view is not None:
            self.status = self.q.before_view
        self.q = QueryState()
        box.remove_class("-visible")
        box.value = ""
        self.text_filter = TextFilter.parse("")
        self.invalid_regex = False
        self.query_one("#runs-table", NavTable).focus()
        self.render_runs()
        self.request_reload()
        return True
