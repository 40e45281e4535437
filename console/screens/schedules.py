"""Schedules: every workflow's schedule (`on: {schedule: ...}`), its next and last tick, paused or not.

`p` pauses the selected schedule (a reason is required) or resumes a paused one (reason optional); the
client checks the policy file and writes the audit record. `o` (or `enter`) opens the run of its last tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import events, on, work
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import (
    DASH,
    format_age,
    format_countdown,
    format_short_timestamp,
    format_timestamp,
    short_id,
    status_glyph,
    status_style,
    truncate,
)
from console.messages import RunChanged, WorkflowsChanged
from console.screens.base import ConsoleScreen, guarded
from console.screens.confirm import ReasonPrompt
from console.widgets.nav_table import NavTable
from worker.client.schedules import ScheduleInfo
from worker.errors import Conflict, WorkerError

WIDE = 110
"""From this width on, the table shows absolute times, the last run and who paused a schedule and why."""
PAUSED = "⏸ paused"


def next_cell(s: ScheduleInfo, now: datetime, wide: bool) -> Text:
    """`in 21h00m` (wide: `03-15 09:00:00  in 21h00m`), or `⏸ paused`, or a dash for a cron that never fires."""
    if s.paused:
        return Text(PAUSED, style="bold yellow")
    if s.next_fire_at is None:
        return Text(DASH, style="dim")
    relative = format_countdown(s.next_fire_at, now)
    return Text(f"{format_short_timestamp(s.next_fire_at)}  {relative}" if wide else relative)


def last_cell(s: ScheduleInfo, now: datetime, wide: bool) -> Text:
    if s.last_fire_at is None:
        return Text("never", style="dim")
    age = format_age(s.last_fire_at, now)
    return Text(f"{format_short_timestamp(s.last_fire_at)}  {age}" if wide else age)


def last_run_cell(s: ScheduleInfo, *, word: bool = True) -> Text:
    """`4869c74d ✗ failed` (without `word`: `4869c74d ✗`)."""
    if s.last_run_id is None:
        return Text(DASH, style="dim")
    out = Text(short_id(s.last_run_id))
    if s.last_run_status:
        status = f" {status_glyph(s.last_run_status)}" + (f" {s.last_run_status}" if word else "")
        out.append(status, style=status_style(s.last_run_status))
    return out


def paused_text(s: ScheduleInfo) -> str:
    """`alice@10.0.0.7: helpdesk maintenance` for a paused schedule, else empty."""
    if not s.paused:
        return ""
    who = s.paused_by or "someone"
    return f"{who}: {s.paused_reason}" if s.paused_reason else who


def schedule_detail(s: ScheduleInfo, now: datetime) -> Text:
    """The selected schedule, everything about it, for the pane under the table."""
    out = Text()
    out.append(s.workflow, style="bold")
    out.append(f"  {s.schedule} · catch_up {s.catch_up}\n", style="dim")

    def field(name: str, value: str | Text, style: str = "") -> None:
        out.append(f"{name:<11}", style="dim")
        out.append(value if isinstance(value, Text) else Text(value, style=style))
        out.append("\n")

    if s.paused:
        field("next fire", f"paused (once resumed, the ticks missed meanwhile follow catch_up {s.catch_up})",
              "yellow")
        since = f" since {format_timestamp(s.paused_at)} ({format_age(s.paused_at, now)})" if s.paused_at else ""
        field("paused by", f"{s.paused_by or 'someone'}{since}", "yellow")
        field("reason", s.paused_reason or DASH)
    elif s.next_fire_at is None:
        field("next fire", "never (the cron expression has no future time)", "dim")
    else:
        field("next fire", f"{format_timestamp(s.next_fire_at)} ({format_countdown(s.next_fire_at, now)})")
    if s.last_fire_at is None:
        field("last fire", "never", "dim")
    else:
        field("last fire", f"{format_timestamp(s.last_fire_at)} ({format_age(s.last_fire_at, now)})")
    run = last_run_cell(s)
    if s.last_run_id is not None:
        run.append("  o opens it", style="dim")
    field("last run", run)
    if s.skipped_ticks:
        field("skipped", f"{s.skipped_ticks} due tick{'s' if s.skipped_ticks != 1 else ''} (catch_up {s.catch_up})")
    if s.last_error:
        field("last error", s.last_error, "red")
    out.append("p resume (reason optional)" if s.paused else "p pause (reason required)", style="dim")
    return out


class SchedulesScreen(ConsoleScreen):
    MODE = "schedules"
    CSS_PATH = "schedules.tcss"
    AUTO_FOCUS = "#schedules-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        *guarded("p", "toggle_pause", "Pause/resume"),
        Binding("o", "open_run", "Open last run"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.schedules: list[ScheduleInfo] = []
        self.fetched = False
        """The schedules were listed at least once (an empty list then means there are none)."""
        self._wide: bool | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield NavTable(id="schedules-table")
        with VerticalScroll(id="schedule-detail-scroll"):
            yield Static(id="schedule-detail")

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        schedules = await self.console_app.client.list_schedules()
        self.schedules = sorted(schedules, key=lambda s: s.workflow)
        self.fetched = True
        self._render_table()

    def on_workflows_changed(self, _message: WorkflowsChanged) -> None:
        self.request_reload()  # a file may have gained, changed or lost its schedule

    def on_run_changed(self, message: RunChanged) -> None:
        if message.event_type == "run.created":
            self.request_reload()  # perhaps a tick fired

    # -- rendering -------------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        if (event.size.width >= WIDE) != self._wide:
            self._render_table()

    def _columns(self, table: NavTable) -> None:
        self._wide = self.size.width >= WIDE
        table.clear(columns=True)
        table.add_column("WORKFLOW", width=20 if self._wide else 16, key="workflow")
        if self._wide:
            table.add_column("SCHEDULE", width=32, key="schedule")
        table.add_column("NEXT", width=26 if self._wide else 10, key="next")
        table.add_column("LAST", width=23 if self._wide else 8, key="last")
        if self._wide:
            table.add_column("LAST RUN", width=10, key="run")
            table.add_column("PAUSED", key="paused")
        else:
            table.add_column("SCHEDULE", key="schedule")

    def _cells(self, s: ScheduleInfo, now: datetime) -> list[str | Text]:
        wide = bool(self._wide)
        workflow = Text(truncate(s.workflow, 20 if wide else 16), style="dim" if s.paused else "")
        if not wide:
            return [workflow, next_cell(s, now, False), last_cell(s, now, False),
                    truncate(s.schedule, max(12, self.size.width - 46))]
        paused = Text(truncate(paused_text(s), max(12, self.size.width - 125)), style="yellow")
        return [workflow, truncate(s.schedule, 32), next_cell(s, now, True), last_cell(s, now, True),
                last_run_cell(s, word=False), paused]

    def _render_table(self) -> None:
        table = self.query_one("#schedules-table", NavTable)
        if self._wide is None or (self.size.width >= WIDE) != self._wide:
            self._columns(table)
        keep = table.selected_key()
        table.clear()
        now = self.console_app.now()
        for s in self.schedules:
            table.add_row(*self._cells(s, now), key=s.workflow)
        table.restore_cursor(keep)
        self._render_detail()

    def _tick(self) -> None:
        """Countdowns move every second; nothing is fetched."""
        if not self.schedules or not self.is_current:
            return
        table = self.query_one("#schedules-table", NavTable)
        now = self.console_app.now()
        for s in self.schedules:
            try:
                table.update_cell(s.workflow, "next", next_cell(s, now, bool(self._wide)))
                table.update_cell(s.workflow, "last", last_cell(s, now, bool(self._wide)))
            except Exception:  # noqa: BLE001 - the row went away between reloads
                continue

    def _selected(self) -> ScheduleInfo | None:
        key = self.query_one("#schedules-table", NavTable).selected_key()
        return next((s for s in self.schedules if s.workflow == key), None)

    @on(DataTable.RowHighlighted, "#schedules-table")
    def _render_detail(self) -> None:
        body = self.query_one("#schedule-detail", Static)
        s = self._selected()
        if s is not None:
            body.update(schedule_detail(s, self.console_app.now()))
        elif not self.schedules and self.fetched:
            body.update(Text("No schedules. A workflow file gets one with `on: {schedule: {cron: \"0 2 * * *\", "
                             "timezone: Europe/Berlin}}` or `on: {schedule: {every: 30s}}`.", style="dim"))
        else:
            body.update("")

    # -- actions ---------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#schedules-table")
    def _row_selected(self) -> None:
        self.action_open_run()

    def action_open_run(self) -> None:
        s = self._selected()
        if s is None:
            return
        if s.last_run_id is None:
            self.notify(f"The schedule of {s.workflow} has not started a run yet.", severity="warning")
            return
        self.console_app.open_run(s.last_run_id)

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_toggle_pause(self) -> None:
        s = self._selected()
        if s is None:
            self.notify("No schedule selected.", severity="warning")
            return
        client = self.console_app.client
        if s.paused:
            body = (f"{s.workflow}: {s.schedule}\npaused by {paused_text(s)}\n\nTicks that came due while it was "
                    f"paused follow its catch_up policy ({s.catch_up}).")
            reason = await self.app.push_screen_wait(ReasonPrompt(
                f"Resume the schedule of {truncate(s.workflow, 40)}?", body, required=False,
                placeholder="reason (optional)"))
            verb = "Resumed"
        else:
            body = f"{s.workflow}: {s.schedule}\n\nNo tick fires while it is paused; it stays paused across edits."
            reason = await self.app.push_screen_wait(ReasonPrompt(
                f"Pause the schedule of {truncate(s.workflow, 40)}: why?", body, required=True))
            verb = "Paused"
        if reason is None:
            return
        try:
            if s.paused:
                await client.resume_schedule(s.workflow, reason or None)
            else:
                await client.pause_schedule(s.workflow, reason)
        except Conflict as exc:  # someone else paused or resumed it meanwhile
            self.notify(str(exc), title="Already changed", severity="error", timeout=10)
        except WorkerError as exc:  # permission denied, no such schedule
            self.notify(str(exc), title=f"Not {verb.lower()}", severity="error", timeout=10)
        except Exception as exc:  # noqa: BLE001 - unreachable database: banner
            self.console_app.report_error(exc)
        else:
            why = f": {truncate(reason, 60)}" if reason else ""
            self.notify(f"The schedule of {s.workflow}{why}", title=verb)
        self.request_reload()
