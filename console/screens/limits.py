"""Limits: the operator's limits (`limits.yaml`) and how the fleet uses them right now, and the workflows' budgets.

Reloaded every REFRESH seconds while shown (nothing is fetched while another screen is). `o` (or `enter`) opens
the run parked longest on the selected limit; on the budgets table it goes to the approvals, where budget
questions are answered.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from console.formatting import DASH, truncate
from console.limits_text import (
    BUDGET_EXAMPLE,
    asking_text,
    bar,
    budget_share,
    empty_limits,
    free_text,
    fullest,
    last_429,
    limit_detail,
    mode_text,
    per_run,
    throttled_on,
    today,
    use_text,
    uses,
)
from console.screens.base import ConsoleScreen
from console.widgets.nav_table import NavTable
from worker.client.limits import BudgetInfo, LimitInfo, LimitsReport
from worker.models import RunStatus, RunSummary

WIDE = 120
"""From this width on, the limits table shows every column."""
REFRESH = 2.0
"""Seconds between reloads while the screen is shown."""
PARKED_LIMIT = 500


def _fullest_first(lim: LimitInfo) -> tuple[float, str]:
    """Full limits on top (what is saturated is the first thing seen), then by how full, then by name."""
    top = fullest(lim)
    return (-(top.share or 0.0) if top and lim.defined else 1.0, lim.name)


class LimitsScreen(ConsoleScreen):
    MODE = "limits"
    CSS_PATH = "limits.tcss"
    AUTO_FOCUS = "#limits-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "open", "Open parked run / approvals"),
        Binding("b", "focus_budgets", "Budgets", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: LimitsReport | None = None
        self.budgets: list[BudgetInfo] = []
        self.parked: dict[str, list[RunSummary]] = {}
        """Limit name -> the runs parked on it (`waiting_on` `throttled: NAME ...`), longest waiting first."""
        self._wide: bool | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="limits-mode")
        yield NavTable(id="limits-table")
        with VerticalScroll(id="limit-detail-scroll"):
            yield Static(id="limit-detail")
        yield NavTable(id="budgets-table")

    def on_mount(self) -> None:
        self.set_interval(REFRESH, self.request_reload, name="limits-refresh")

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        client = self.console_app.client
        report = await client.limits()
        budgets = await client.budgets()
        waiting = await client.list_runs(status=RunStatus.WAITING.value, limit=PARKED_LIMIT) if any(
            lim.waiting for lim in report.limits) else []
        parked: dict[str, list[RunSummary]] = {}
        for run in sorted(waiting, key=lambda r: r.updated_at):
            name = throttled_on(run)
            if name is not None:
                parked.setdefault(name, []).append(run)
        self.report, self.budgets, self.parked = report, budgets, parked
        self._show()

    # -- rendering -------------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        if (event.size.width >= WIDE) != self._wide:
            self._show()

    def _columns(self, table: NavTable, budgets: NavTable) -> None:
        self._wide = wide = self.size.width >= WIDE
        table.clear(columns=True)
        table.add_column("LIMIT", width=20 if wide else 16, key="name")
        table.add_column("FULLEST", width=13, key="use")
        if wide:
            table.add_column("REQUESTS", width=28, key="req")
            table.add_column("TOKENS", width=28, key="tok")
            table.add_column("IN FLIGHT", width=10, key="busy")
        else:
            table.add_column("USE / RATE", width=20, key="rate")
        table.add_column("WAITING", width=7, key="waiting")
        table.add_column("429s", key="429")
        budgets.clear(columns=True)
        budgets.add_column("BUDGET (workflow)", width=20 if wide else 16, key="workflow")
        budgets.add_column("TODAY", width=13, key="bar")
        budgets.add_column("SPENT / PER DAY", width=20, key="today")
        if wide:
            budgets.add_column("PER RUN", width=22, key="run")
            budgets.add_column("CALLS TODAY", width=11, key="calls")
        budgets.add_column("EXCEED", width=6, key="exceed")
        budgets.add_column("ASKING", key="asking")

    def _limit_cells(self, lim: LimitInfo, now: datetime) -> list[str | Text]:
        wide = bool(self._wide)
        top = fullest(lim)
        name = Text(truncate(lim.name, 20 if wide else 16), style="" if lim.defined else "dim italic")
        use = bar(top.share if top else None) if lim.defined else Text("not in file", style="dim italic")
        waiting = Text(DASH if lim.waiting is None else str(lim.waiting), style="bold yellow" if lim.waiting else "")
        rejected = Text(last_429(lim, now), style="red" if lim.rejected_429 else "dim")
        if not wide:
            rate = use_text(top, lim.window) if top else DASH
            return [name, use, rate, waiting, rejected]
        by_kind = {u.kind: u for u in uses(lim)}

        def cell(kind: str) -> Text:
            u = by_kind.get(kind)
            if u is None:
                return Text(DASH, style="dim")
            free = free_text(u)
            return Text(use_text(u, lim.window) + (f" · {free}" if free and kind != "busy" else ""),
                        style="bold red" if (u.share or 0) >= 1.0 else "")

        return [name, use, cell("req"), cell("tok"), cell("busy"), waiting, rejected]

    def _budget_cells(self, b: BudgetInfo) -> list[str | Text]:
        share = budget_share(b)
        cells: list[str | Text] = [truncate(b.workflow, 20 if self._wide else 16), bar(share), today(b)]
        if self._wide:
            cells += [per_run(b), str(b.calls_today)]
        return [*cells, b.on_exceed, asking_text(b)]

    def _show(self) -> None:
        table = self.query_one("#limits-table", NavTable)
        budgets = self.query_one("#budgets-table", NavTable)
        if self._wide is None or (self.size.width >= WIDE) != self._wide:
            self._columns(table, budgets)
        now = self.console_app.now()
        mode = self.query_one("#limits-mode", Static)
        mode.update(mode_text(self.report, now, self.size.width) if self.report else "")
        keep = table.selected_key()
        table.clear()
        for lim in sorted(self.report.limits if self.report else (), key=_fullest_first):
            table.add_row(*self._limit_cells(lim, now), key=lim.name)
        table.restore_cursor(keep)
        keep = budgets.selected_key()
        budgets.clear()
        for b in sorted(self.budgets, key=lambda b: (-(budget_share(b) or 0.0) - b.asking, b.workflow)):
            budgets.add_row(*self._budget_cells(b), key=b.workflow)
        budgets.restore_cursor(keep)
        budgets.set_class(not self.budgets, "-empty")
        self._render_detail()

    def _selected(self) -> LimitInfo | None:
        key = self.query_one("#limits-table", NavTable).selected_key()
        return next((lim for lim in self.report.limits if lim.name == key), None) if self.report else None

    @on(DataTable.RowHighlighted, "#limits-table")
    def _render_detail(self) -> None:
        body = self.query_one("#limit-detail", Static)
        lim = self._selected()
        if lim is not None:
            text = limit_detail(lim, self.parked.get(lim.name, []), self.report.file if self.report else None,
                                self.console_app.now())
        elif self.report is not None and not self.report.limits:
            text = empty_limits(self.report)
        else:
            text = Text("")
        if self.report is not None and not self.budgets:
            text.append(f"\nNo workflow has a budget: a workflow file caps its LLM spend with\n{BUDGET_EXAMPLE}",
                        style="dim")
        body.update(text)

    # -- actions ---------------------------------------------------------------------------
    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_focus_budgets(self) -> None:
        self.query_one("#budgets-table", NavTable).focus()

    def action_open(self) -> None:
        budgets = self.query_one("#budgets-table", NavTable)
        if budgets.has_focus:
            b = next((b for b in self.budgets if b.workflow == budgets.selected_key()), None)
            if b is None:
                return
            if not b.asking:
                self.notify(f"No run of {b.workflow} waits for a budget decision.", severity="warning")
                return
            self.app.switch_mode("approvals")
            return
        lim = self._selected()
        if lim is None:
            self.notify("No limit selected.", severity="warning")
            return
        parked = self.parked.get(lim.name, [])
        if not parked:
            waiting = f" ({lim.waiting} steps wait a moment on their workers)" if lim.waiting else ""
            self.notify(f"No run is parked on {lim.name}{waiting}.", severity="warning")
            return
        self.console_app.open_run(parked[0].run_id)
