"""Runs: every run, newest first; filter, mark, bulk cancel, retry, pause and resume, open."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import events, on, work
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from console.filtering import (
    TextFilter,
    cancellable,
    filter_runs,
    is_invalid_regex,
    next_status,
    parse_tab,
)
from console.formatting import describe_error, short_id, truncate
from console.messages import RunChanged, TasksChanged
from console.run_query import preview_match
from console.screens.base import guarded
from console.screens.confirm import ConfirmDialog
from console.screens.pausing import pause_runs_flow
from console.screens.retry import bulk_retry_flow
from console.screens.run_query import RunsQueryScreen
from console.screens.run_rows import RunRows, run_lines, status_tabs
from console.widgets.nav_table import NavTable
from worker.client import RUN_ORDERS
from worker.client.replica import ReadReplica
from worker.errors import WorkerError
from worker.models import RunStatus, RunSummary
from worker.search.filters import RunFilter

RUNS_LIMIT = 500
PATCH_INTERVAL = 0.1
"""Seconds between two batches of live changes to the table. Each batch redraws the rows it changed; applied
one event at a time, a busy feed would keep the console drawing all the time and delay the events behind."""
RUN_ORDER_NAMES = tuple(RUN_ORDERS)
ORDER_LABELS = {"oldest": "oldest first", "longest": "longest first", "workflow": "by workflow"}


class RunsScreen(RunsQueryScreen):
    """The default screen."""

    MODE = "runs"
    CSS_PATH = "runs.tcss"
    AUTO_FOCUS = "#runs-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("space", "toggle_mark", "Mark"),
        *guarded("c", "cancel", "Cancel"),
        *guarded("R", "replay", "Replay"),
        *guarded("p", "toggle_pause", "Pause/resume", show=False),  # the hint line says it (the footer is full)
        *guarded("E", "send_event", "Send event", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("colon", "command", "Saved views (:view, :save)", show=False),
        Binding("s", "cycle_status(1)", "Status"),
        Binding("o", "cycle_order", "Sort"),
        Binding("S", "cycle_status(-1)", "Status back", show=False),
        Binding("escape", "back", "Clear", show=False),
    ]

    HELP_NOTES: ClassVar[tuple[str, ...]] = (
        "/ filter: a regex over id, workflow, step, error, wait; and terms, all combined: workflow:W status:S "
        "step:X error:TEXT since:2h waiting:human|event|retry|alice (quote values with spaces: error:\"HTTP 503\"); "
        "the regex, step: and error: look at the newest 10,000 runs the other terms match",
        ": commands: :view NAME applies a saved view (agentrt runs --save-view), :view lists them, :save NAME "
        "saves this filter for everyone · esc clears the filter and the view",
    )

    def __init__(self) -> None:
        super().__init__()
        self.marked: set[str] = set()
        self.runs: list[RunSummary] = []
        self.order = RUN_ORDER_NAMES[0]
        """How the server sorts the runs (RUN_ORDERS): `o` cycles newest, oldest, longest, workflow."""
        self.counts: dict[str, int] = {}
        self.retrying = 0
        """Runs backing off between attempts (a part of counts["waiting"])."""
        self.replica: ReadReplica | None = None
        """Where the list was read: a read replica (AGENTRT_DATABASE_READ_URL) and its lag, shown in the header."""
        self.rows = RunRows()
        """Lays the rows out and remembers the cells last made for each run."""
        self._patches: dict[str, tuple[RunChanged, float]] = {}
        """Live changes not applied yet, by run: (the latest event, when it was queued)."""
        self._patch_timer: Timer | None = None
        self._last_patched = 0.0
        self.searched_for: str | None = None
        """The text `runs` was searched for on the server (None: not searched)."""
        self.listed_by: RunFilter | None = None
        """The terms (and status) `runs` was listed with on the server."""

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="runs-tabs")
        yield Static(id="runs-info")
        yield Static(id="runs-message")
        yield NavTable(id="runs-table")
        yield Input(placeholder="regex, and/or workflow: status: step: error: since: waiting:  (:view NAME)",
                    id="runs-filter")

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        """The first runs (LIMIT) in the chosen order, filtered by status and by the `/` line on the server."""
        client = self.console_app.client
        terms = replace(self.current_filter(), search=None)
        search = self.text_filter.text if self.text_filter.active else None
        invalid = False
        asked = time.monotonic()
        try:
            runs = await client.list_runs(limit=RUNS_LIMIT, search=search, order=self.order, filters=terms)
        except Exception as exc:
            if search is None or not is_invalid_regex(exc):
                raise
            invalid = True  # matched literally below, over the newest runs
            runs = await client.list_runs(limit=RUNS_LIMIT, order=self.order, filters=terms)
        self.counts = await client.count_runs()
        self.retrying = await client.count_retrying()
        self.replica = await client.read_replica()
        self.runs = list(runs)
        self.searched_for = None if invalid else search
        self.invalid_regex = invalid
        self.listed_by = terms
        self.marked &= {r.run_id for r in self.runs}
        if not terms.as_dict() and search is None and self.order == RUN_ORDER_NAMES[0]:
            self.console_app.last_runs = list(self.runs)
        # events queued before the query are in its answer (or older than it)
        self._patches = {k: (m, t) for k, (m, t) in self._patches.items() if t > asked}
        self.render_runs()

    def on_run_changed(self, message: RunChanged) -> None:
        """Show the event's status and step on the run's row (at once, or with the next batch when events
        flood in); the reload that follows confirms it and shows new runs."""
        self._patches[message.run_id] = (message, time.monotonic())
        if self._patch_timer is None:
            wait = self._last_patched + PATCH_INTERVAL - time.monotonic()
            if wait <= 0:
                self._apply_patches()
            else:
                self._patch_timer = self.set_timer(wait, self._apply_patches, name="runs-patches")
        self.request_reload()

    def _apply_patches(self) -> None:
        """Put the queued events' status and step on the rows of their runs (runs not listed wait for the reload)."""
        self._patch_timer = None
        self._last_patched = time.monotonic()
        patches, self._patches = self._patches, {}
        if not self._visible():
            return
        table = self.query_one("#runs-table", NavTable)
        where: dict[str, int] = {run.run_id: i for i, run in enumerate(self.runs)}
        now, last_width = self.console_app.now(), self.rows.last_width(self.size.width)
        for message, _queued in patches.values():
            index = where.get(message.run_id)
            if message.status is None or index is None or not table.shows(message.run_id):
                continue
            try:
                status = RunStatus(message.status)
            except ValueError:
                continue
            old = self.runs[index]
            unpaused = message.event_type == "run.unpaused" or status.terminal
            run = replace(old, status=status, current_step=message.current_step, waiting_on=message.waiting_on,
                          wake_at=old.wake_at if status is RunStatus.WAITING else None,
                          paused=None if unpaused else old.paused)
            if run != old:
                self.runs[index] = run
                table.update_row(run.run_id, self._cells(run, now, last_width))

    @property
    def visible_runs(self) -> list[RunSummary]:
        runs, terms = self.runs, replace(self.current_filter(), search=None)
        if terms != self.listed_by:  # a preview until the server answers
            now = self.console_app.now()
            runs = [r for r in runs if preview_match(terms, r, now)]
        if not self.text_filter.active or self.searched_for == self.text_filter.text:
            return runs  # the server searched
        if self.invalid_regex:
            return filter_runs(runs, TextFilter.literal(self.text_filter.text))
        return filter_runs(runs, self.text_filter)  # a preview until the server answers

    # -- rendering -------------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        if self.rows.relayout(event.size.width):
            self.render_runs()

    def render_runs(self) -> None:
        """Fill the table. A live update usually changes a few cells or adds a run at the top: the table
        touches only those (a full rebuild re-measures every row)."""
        table = self.query_one("#runs-table", NavTable)
        now, width = self.console_app.now(), self.size.width
        if self.rows.relayout(width):
            table.clear(columns=True)
            table.add_column(self.rows.header(width), key="run")
        last_width = self.rows.last_width(width)
        rows = [(run.run_id, self._cells(run, now, last_width)) for run in self.visible_runs]
        self.rows.keep({key for key, _ in rows})
        table.show_rows(rows)
        self._render_header()

    def _cells(self, run: RunSummary, now: datetime, last_width: int) -> list[Text]:
        return self.rows.cells(run, run.run_id in self.marked, now, last_width,
                               uncertain=run.run_id in self.console_app.uncertain_runs)

    def on_tasks_changed(self, _message: TasksChanged) -> None:
        if self.loaded:
            self.render_runs()  # which runs wait on an uncertain effect may have changed

    def _render_header(self) -> None:
        tabs = [Content.from_markup(f"[{'reverse bold ' if chosen else ''}@click=screen.set_status('{name}')]"
                                    "$label[/]", label=label)
                for name, label, chosen in status_tabs(self.counts, self.retrying, self.tab, self.size.width)]
        self.query_one("#runs-tabs", Static).update(Content("").join(tabs))
        shown = len(self.visible_runs)
        info = [f"{shown} shown" + (f" of {len(self.runs)}" if shown != len(self.runs) else "")]
        info += self.q.info(self.status, self.size.width)
        if self.text_filter.active:
            if self.invalid_regex:
                info.append(f"invalid regex, matched as text: {truncate(self.text_filter.text, 24)}")
            else:
                kind = "regex" if self.text_filter.is_regex else "text"
                info.append(f"search ({kind}): {truncate(self.text_filter.text, 30)}")
        if self.order != RUN_ORDER_NAMES[0]:
            info.append(f"sorted: {ORDER_LABELS.get(self.order, self.order)}")
        if self.marked:
            info.append(f"{len(self.marked)} marked")
        if self.replica is not None:  # the list is the replica's: say how old it may be
            info.append(self.replica.text())
        hint = "  s status · / filter · space mark · p pause · c cancel · enter open"
        line = " · ".join(info)
        self.query_one("#runs-info", Static).update(
            Content.assemble((line, "bold"), (hint if len(line) + len(hint) <= self.size.width else "", "dim")))
        message = self.query_one("#runs-message", Static)
        message.update(self.q.message_text())
        message.set_class(bool(self.q.message), "-visible")

    # -- actions ---------------------------------------------------------------------------
    def _selected_run(self) -> RunSummary | None:
        key = self.query_one("#runs-table", NavTable).selected_key()
        return next((r for r in self.runs if r.run_id == key), None)

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.console_app.open_run(event.row_key.value)

    def action_open(self) -> None:
        run = self._selected_run()
        if run is not None:
            self.console_app.open_run(run.run_id)

    def action_toggle_mark(self) -> None:
        table = self.query_one("#runs-table", NavTable)
        key = table.selected_key()
        if key is None:
            return
        if key in self.marked:
            self.marked.discard(key)
        else:
            self.marked.add(key)
        run = next((r for r in self.runs if r.run_id == key), None)
        if run is not None:
            table.update_row(key, self._cells(run, self.console_app.now(), self.rows.last_width(self.size.width)))
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)
        self._render_header()

    def action_set_status(self, name: str) -> None:
        self.status = parse_tab(name)
        self.drop_status_term()
        self.request_reload()

    def action_cycle_status(self, step: int) -> None:
        self.status = next_status(self.tab, step)
        self.drop_status_term()
        self._render_header()
        self.request_reload()

    def action_cycle_order(self) -> None:
        self.order = RUN_ORDER_NAMES[(RUN_ORDER_NAMES.index(self.order) + 1) % len(RUN_ORDER_NAMES)]
        self._render_header()
        self.request_reload()

    def action_back(self) -> None:
        if self.clear_query():
            return
        if self.marked:
            self.marked.clear()
            self.render_runs()
        else:
            super().action_back()

    def action_replay(self) -> None:
        """The selected run: the replay dialog. Marked runs: retry each failed/cancelled one from its failed step."""
        if self.marked:
            self.retry_marked()
            return
        run = self._selected_run()
        if run is None:
            self.notify("No run selected.", severity="warning")
            return
        self.replay_run(run.run_id, run.workflow)

    def action_send_event(self) -> None:
        """`E`: the event the selected run waits for, in a dialog prefilled from its wait."""
        run = self._selected_run()
        if run is None:
            self.notify("No run selected.", severity="warning")
            return
        self.send_event_to(run)

    def _targets(self) -> list[RunSummary]:
        """The marked runs, else the selected one."""
        if self.marked:
            return [r for r in self.runs if r.run_id in self.marked]
        selected = self._selected_run()
        return [selected] if selected else []

    @work(group="action", exclusive=True, exit_on_error=False)
    async def retry_marked(self) -> None:
        """Each marked failed/cancelled run, under its own version or the current one (console/screens/retry.py)."""
        if await bulk_retry_flow(self, self._targets()):
            self.marked.clear()
        self.request_reload()

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_toggle_pause(self) -> None:
        """`p`: pause the selected or marked runs (a reason is required), or resume them when all are paused."""
        if await pause_runs_flow(self, self._targets()):
            self.marked.clear()
        self.request_reload()

    async def _confirm_and_apply(self, runs: list[RunSummary], dialog: ConfirmDialog,
                                 apply: Callable[[str], Awaitable[object]]) -> tuple[int | None, list[str]]:
        """Ask `dialog`; if confirmed, `apply` each run (stopping at an unreachable database), clear the marks and
        reload. (None, []) when declined, else (how many succeeded, one line per failure)."""
        if not await self.app.push_screen_wait(dialog):
            return None, []
        done, failed = 0, []
        for run in runs:
            try:
                await apply(run.run_id)
                done += 1
            except WorkerError as exc:  # Conflict (finished meanwhile), NotFound, PermissionDenied
                failed.append(f"{short_id(run.run_id)}: {exc}")
            except Exception as exc:  # noqa: BLE001 - unreachable database: banner, stop here
                self.console_app.report_error(exc)
                failed.append(f"{short_id(run.run_id)}: {describe_error(exc)}")
                break
        self.marked.clear()
        self.request_reload()
        return done, failed

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_cancel(self) -> None:
        targets = self._targets()
        runs = cancellable(targets)
        skipped = len(targets) - len(runs)
        if not runs:
            what = "the marked runs have" if self.marked else "this run has"
            self.notify(f"Nothing to cancel: {what} already finished." if targets else "No run selected.",
                        severity="warning")
            return
        n = len(runs)
        lines = run_lines(runs)
        if skipped:
            lines.append(f"({skipped} already finished, skipped)")
        title = f"Cancel {n} run{'s' if n != 1 else ''}?"
        done, failed = await self._confirm_and_apply(
            runs, ConfirmDialog(title, "\n".join(lines), confirm_label=f"Yes, cancel {n}", cancel_label="Keep",
                                danger=True),
            lambda run_id: self.console_app.client.cancel(run_id))
        if done is None:
            return
        if failed:
            self.notify("\n".join(failed[:5]), title=f"Cancelled {done} of {n}", severity="error", timeout=10)
        else:
            self.notify(f"Cancel requested for {done} run{'s' if done != 1 else ''}.", title="Cancelled")

