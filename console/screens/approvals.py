"""Approvals inbox: pending human tasks; approve, reject (with a reason) or resolve an uncertain effect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import (
    DASH,
    deadline_style,
    describe_error,
    format_age,
    format_countdown,
    format_json,
    format_timestamp,
    short_id,
    truncate,
)
from console.messages import TasksChanged
from console.screens.base import ConsoleScreen, guarded
from console.screens.confirm import ConfirmDialog, ReasonPrompt, ResolveDialog
from console.widgets.nav_table import NavTable
from worker.errors import Conflict, WorkerError
from worker.models import HumanTask


def _kind_label(task: HumanTask) -> Text:
    if task.kind == "uncertain":
        return Text("⚠ uncertain", style="bold yellow")
    return Text("? approval", style="cyan")


class ApprovalsScreen(ConsoleScreen):
    MODE = "approvals"
    CSS_PATH = "approvals.tcss"
    AUTO_FOCUS = "#approvals-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        *guarded("a", "approve", "Approve"),
        *guarded("r", "reject", "Reject"),
        *guarded("e", "resolve", "Resolve"),
        Binding("o", "open_run", "Open run"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[HumanTask] = []
        self.flash: Text = Text("")
        """The outcome of the last decision (kept on screen: a conflict must not go unnoticed)."""

    def compose_body(self) -> Iterable[Widget]:
        yield NavTable(id="approvals-table")
        yield Static(id="approvals-flash")
        with VerticalScroll(id="task-detail-scroll"):
            yield Static(id="task-detail")

    def on_mount(self) -> None:
        table = self.query_one("#approvals-table", NavTable)
        table.add_column("KIND", width=11, key="kind")
        table.add_column("WORKFLOW", width=16, key="workflow")
        table.add_column("STEP", width=10, key="step")
        table.add_column("DEADLINE", width=11, key="deadline")
        table.add_column("PROMPT", key="prompt")
        self.set_interval(1.0, self._tick)

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        tasks = await self.console_app.client.list_tasks(status="pending")
        self.tasks = sorted(tasks, key=lambda t: (t.deadline is None, t.deadline or t.created_at, t.created_at))
        self._render_table()

    def on_tasks_changed(self, _message: TasksChanged) -> None:
        self.request_reload()

    def _render_table(self) -> None:
        table = self.query_one("#approvals-table", NavTable)
        keep = table.selected_key()
        table.clear()
        now = self.console_app.now()
        width = max(16, self.size.width - 60)
        for t in self.tasks:
            table.add_row(_kind_label(t), truncate(t.workflow, 16), truncate(t.step_id, 10),
                          Text(format_countdown(t.deadline, now), style=deadline_style(t.deadline, now)),
                          truncate(t.prompt, width), key=t.task_id)
        table.restore_cursor(keep)
        if not self.tasks:
            self.query_one("#task-detail", Static).update(Text("No pending approvals.", style="dim"))
        else:
            self._render_detail()

    def _tick(self) -> None:
        """Deadline countdowns move every second; nothing is fetched."""
        if not self.tasks or not self.is_current:
            return
        table = self.query_one("#approvals-table", NavTable)
        now = self.console_app.now()
        for t in self.tasks:
            try:
                table.update_cell(t.task_id, "deadline",
                                  Text(format_countdown(t.deadline, now), style=deadline_style(t.deadline, now)))
            except Exception:  # noqa: BLE001 - the row went away between reloads
                continue

    def _selected(self) -> HumanTask | None:
        key = self.query_one("#approvals-table", NavTable).selected_key()
        return next((t for t in self.tasks if t.task_id == key), None)

    def _render_detail(self) -> None:
        task = self._selected()
        body = self.query_one("#task-detail", Static)
        if task is None:
            body.update("")
            return
        now = self.console_app.now()
        out = Text()
        out.append(task.prompt + "\n", style="bold")
        out.append(f"{task.workflow} · step {task.step_id} · run {task.run_id} · task {short_id(task.task_id)}\n",
                   style="dim")
        deadline = (f"{format_countdown(task.deadline, now)} ({format_timestamp(task.deadline)})"
                    if task.deadline else DASH)
        out.append(f"requested {format_age(task.created_at, now)} · deadline {deadline}")
        if task.on_timeout:
            out.append(f" · on timeout: {task.on_timeout}")
        out.append("\n")
        asked = [f"asked by {task.requested_by}"] if task.requested_by else []
        if task.min_approvals > 1:
            so_far = f": {', '.join(task.approved_by)}" if task.approved_by else ""
            asked.append(f"approvals {len(task.approved_by)} of {task.min_approvals}{so_far}")
        if task.approvers:
            asked.append(f"may decide: {', '.join(task.approvers)}")
        if task.escalated:
            asked.append("escalated")
        if asked:
            out.append(" · ".join(asked) + "\n", style="yellow" if task.escalated else "")
        if task.kind == "uncertain":
            out.append("Uncertain effect: press e to retry (same key), mark done, or fail.\n", style="yellow")
        else:
            out.append("a approve · r reject (reason required) · o open run\n", style="dim")
        if task.context not in (None, {}, []):
            out.append("context ", style="bold")
            out.append(format_json(task.context, 2000) + "\n")
        body.update(out)

    @on(DataTable.RowHighlighted, "#approvals-table")
    def _highlighted(self) -> None:
        self._render_detail()

    @on(DataTable.RowSelected, "#approvals-table")
    def _row_selected(self) -> None:
        self.action_open_run()

    # -- actions ---------------------------------------------------------------------------
    def action_open_run(self) -> None:
        task = self._selected()
        if task is not None:
            self.console_app.open_run(task.run_id)

    def _set_flash(self, text: str, style: str) -> None:
        self.flash = Text(text, style=style)
        self.query_one("#approvals-flash", Static).update(self.flash)

    def _where(self, task: HumanTask) -> str:
        return f"{task.workflow} · step {task.step_id} · run {short_id(task.run_id)}"

    def _approval_target(self) -> HumanTask | None:
        task = self._selected()
        if task is None:
            self.notify("No pending approval selected.", severity="warning")
            return None
        if task.kind != "approval":
            self.notify("This is an uncertain-effect task: press e to resolve it (retry / done / fail).",
                        severity="warning")
            return None
        return task

    async def _send(self, task: HumanTask, verb: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except Conflict as exc:
            self._set_flash(f"✗ Already decided: {exc}", "bold red")
            self.notify(str(exc), title="Already decided", severity="error", timeout=15)
        except WorkerError as exc:
            self._set_flash(f"✗ {verb} failed: {exc}", "bold red")
            self.notify(str(exc), title=f"{verb} failed", severity="error", timeout=10)
        except Exception as exc:  # noqa: BLE001 - unreachable database: banner, nothing was sent
            self.console_app.report_error(exc)
            self._set_flash(f"✗ {verb} not sent: {describe_error(exc)}", "bold red")
        else:
            self._set_flash(f"✓ {verb}: {truncate(task.prompt, 50)} ({self._where(task)})", "green")
            self.notify(f"{verb}: {truncate(task.prompt, 60)}", title=verb)
        self.request_reload()

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_approve(self) -> None:
        task = self._approval_target()
        if task is None:
            return
        ok = await self.app.push_screen_wait(ConfirmDialog(
            "Approve?", f"{task.prompt}\n\n{self._where(task)}", confirm_label="Approve"))
        if ok:
            await self._send(task, "Approved", lambda: self.console_app.client.decide(task.task_id, approve=True))

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_reject(self) -> None:
        task = self._approval_target()
        if task is None:
            return
        reason = await self.app.push_screen_wait(ReasonPrompt(
            "Reject: why?", f"{task.prompt}\n{self._where(task)}", required=True))
        if reason is None:
            return
        ok = await self.app.push_screen_wait(ConfirmDialog(
            "Reject?", f"{task.prompt}\n\nreason: {reason}\n{self._where(task)}", confirm_label="Reject",
            danger=True))
        if ok:
            await self._send(task, "Rejected", lambda: self.console_app.client.decide(
                task.task_id, approve=False, reason=reason))

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_resolve(self) -> None:
        task = self._selected()
        if task is None:
            self.notify("No pending task selected.", severity="warning")
            return
        if task.kind != "uncertain":
            self.notify("This is an approval: press a to approve or r to reject.", severity="warning")
            return
        choice = await self.app.push_screen_wait(ResolveDialog(task.prompt, self._where(task)))
        if choice is None:
            return
        verb = {"retry": "Retry requested", "done": "Marked done", "fail": "Marked failed"}[choice.action]
        await self._send(task, verb, lambda: self.console_app.client.resolve(
            task.task_id, action=choice.action, output=choice.output, reason=choice.reason))
