"""The runs table's rows: one cell per row holding every field laid out in its place, under a header laid out
like the rows. DataTable renders each cell on its own, at a cost, and a live list re-renders rows many times a
second: one cell per row is a third of the work of nine.

Narrow (under WIDE columns, 80x24 over SSH): mark, status, run, workflow, trigger (a short word), started,
duration, then the step, or for a run parked on an event what it waits for and the time left, or a failed
run's error, or who paused a run and why, or a run's next attempt and last error while it backs off. Wide: the
definition version too, the trigger's whole word, and the step followed by the wait, pause or retry.

The status tabs above the table (`status_tabs`) shrink to fit: padded words, words, short words, glyphs.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from console.filtering import HIDDEN_WHEN_EMPTY, RETRYING, STATUS_CYCLE, StatusTab, is_retrying
from console.formatting import (
    PAUSED_COLOUR,
    format_age,
    format_duration,
    pause_text,
    retry_text,
    run_elapsed,
    short_id,
    status_glyph,
    status_label,
    status_style,
    trigger_label,
    truncate,
    wait_kind,
    wait_text,
)
from worker.models import RunStatus, RunSummary

WIDE = 110
"""From this width on, rows also show the definition version, and the wait after the step."""
MARK = "●"
_NARROW = [1, 11, 8, 14, 6, 7, 6]
"""Narrow field widths, the last field (step, wait or error) aside; one space between fields."""
_WIDE = [1, 11, 8, 24, 8, 8, 7, 6]
"""Wide field widths (with the version); two spaces between fields."""


def line(fields: list[Text], widths: list[int], gap: int = 2) -> Text:
    """`fields` side by side, each but the last cut or padded to its width, `gap` spaces apart."""
    out = Text(end="", no_wrap=True)
    for i, field in enumerate(fields):
        if i < len(widths):
            field = field.copy()
            field.truncate(widths[i], pad=True)
        out.append_text(field)
        if i < len(fields) - 1:
            out.append(" " * gap)
    return out


def run_lines(runs: list[RunSummary], now: datetime | None = None) -> list[str]:
    """The first runs of a bulk action, one line each, for its confirmation (with `now`: who paused a paused
    one, and why)."""
    lines = []
    for r in runs[:6]:
        lines.append(f"{short_id(r.run_id)}  {truncate(r.workflow, 24):<24}  {status_label(r.status)}")
        if now is not None and r.paused is not None:
            lines.append(f"          {truncate(pause_text(r.paused, now, short=True), 50)}")
    if len(runs) > 6:
        lines.append(f"… and {len(runs) - 6} more")
    return lines


UNCERTAIN = "⚠ uncertain"


def run_label(run: RunSummary, uncertain: bool = False) -> tuple[str, str]:
    """A row's status and its style: `⏸ paused`; `⏸ pausing` for a run paused while a worker finishes its step;
    `↻ retrying` for one backing off; `⚠ uncertain` for one waiting on a human to settle an uncertain effect
    (`uncertain`: it has such a pending task); else the status, or what a parked run waits for."""
    if run.paused is not None and run.status in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PENDING):
        return "⏸ pausing", status_style("pausing")
    if run.status is RunStatus.WAITING and run.waiting_on == "human" and uncertain:
        return UNCERTAIN, "bold yellow"
    if is_retrying(run):
        return status_label(run.status, waiting_on=run.waiting_on), status_style(RETRYING)
    return status_label(run.status, waiting_on=run.waiting_on), status_style(run.status)


def activity(run: RunSummary, now: datetime, wide: bool) -> str:
    """The row's last field: the step; for a parked run what it waits for (an event's name and key; the
    time left); for a queued run its concurrency key; for a failed run its error; for a paused run who paused
    it, when and why; for a run backing off its next attempt, when, and the last error."""
    if run.status is RunStatus.FAILED and run.error:
        return run.error
    step = run.current_step or ""
    if run.paused is not None and not run.status.terminal:
        pause = pause_text(run.paused, now, short=not wide)
        return " · ".join(part for part in (step, pause) if part) if wide else pause
    if run.status is RunStatus.QUEUED and run.concurrency_key is not None:
        return f"key {run.concurrency_key}"
    if run.status is not RunStatus.WAITING:
        return step
    if is_retrying(run):
        retry = retry_text(run.waiting_on, run.wake_at, run.error, now, short=not wide)
        return " · ".join(part for part in (step, retry) if part) if wide else retry
    kind = wait_kind(run.waiting_on)
    if not wide:  # the status says the kind already: an event's name and key matter, other waits' step
        if kind == "event" and run.waiting_on:
            return wait_text(run.waiting_on.removeprefix("event "), run.wake_at, now)
        return step
    detail = wait_text(run.waiting_on, run.wake_at, now, human=False)
    return " · ".join(part for part in (step, detail) if part)


def run_state(run: RunSummary, now: datetime) -> str | None:
    """For the run detail's header: who paused it and why, its next attempt while it backs off, or what it waits
    for and until when; None for a run doing none of these."""
    if run.paused is not None and not run.status.terminal:
        return pause_text(run.paused, now) + (" (finishing its step in flight)" if run.status is RunStatus.RUNNING
                                              else "")
    if is_retrying(run):
        return retry_text(run.waiting_on, run.wake_at, None, now)
    return f"waits for {wait_text(run.waiting_on, run.wake_at, now)}" if run.status is RunStatus.WAITING else None


def activity_style(run: RunSummary) -> str:
    """The last field's style: a failed run's error red, a pause purple, a run backing off yellow."""
    if run.status is RunStatus.FAILED and run.error:
        return "red"
    if run.paused is not None and not run.status.terminal:
        return PAUSED_COLOUR
    return "yellow" if is_retrying(run) else ""


_SHORT_TAB = {"running": "run", "retrying": "retry", "waiting": "wait", "pending": "pend", "queued": "queue",
              "failed": "fail", "completed": "done", "cancelled": "canc"}


def status_tabs(counts: dict[str, int], retrying: int, selected: StatusTab,
                width: int) -> list[tuple[str, str, bool]]:
    """The runs tabs as (name, label, selected): `all` counts every run (the retrying ones are among the
    waiting); queued and paused show only while some run is (or when chosen). Labels fit `width` if they can:
    ` running 3 ` padded, `running 3 `, `run 3 `, then `▶3 `. A count the runtime estimated (`count_runs()`'s
    `estimated`: a status with very many runs) shows as `~N`, and so does `all` then."""
    estimated: frozenset[str] = getattr(counts, "estimated", frozenset())
    tabs: list[tuple[str, str, bool]] = []
    for tab in STATUS_CYCLE:
        name = str(tab) if tab is not None else "all"
        n = (sum(counts.values()) if tab is None else retrying if tab == RETRYING else counts.get(str(tab), 0))
        if tab in HIDDEN_WHEN_EMPTY and not n and tab != selected:
            continue
        about = bool(estimated) if tab is None else str(tab) in estimated
        tabs.append((name, f"~{n}" if about else str(n), tab == selected))
    styles = [lambda name, n: f" {name} {n} ", lambda name, n: f"{name} {n} ",
              lambda name, n: f"{_SHORT_TAB.get(name, name)} {n} ",
              lambda name, n: (f"{name} {n} " if name == "all" else f"{status_glyph(name)}{n} ")]
    for style in styles:
        labels = [(name, style(name, n), chosen) for name, n, chosen in tabs]
        if sum(len(label) for _, label, _ in labels) <= width:
            return labels
    return labels


class RunRows:
    """Lays rows out for the table's width and remembers each run's cells (the same object back when
    nothing in it changed, so the table skips it)."""

    def __init__(self) -> None:
        self.wide: bool | None = None
        self._cells: dict[str, tuple[tuple[object, ...], list[Text]]] = {}

    def relayout(self, width: int) -> bool:
        """True when `width` needs other columns than the current ones (then the header is rebuilt)."""
        return self.wide is None or (width >= WIDE) != self.wide

    def header(self, width: int) -> Text:
        """The one column's label, laid out like the rows, for `width`."""
        self.wide = width >= WIDE
        labels = ["", "STATUS", "RUN", "WORKFLOW", "TRIGGER" if self.wide else "TRIG.",
                  *(["VERSION"] if self.wide else []), "STARTED", "DUR", "STEP"]
        return line([Text(label) for label in labels], self._widths(), self._gap())

    def _widths(self) -> list[int]:
        return _WIDE if self.wide else _NARROW

    def _gap(self) -> int:
        return 2 if self.wide else 1

    def last_width(self, width: int) -> int:
        """Characters left for the step (or wait, or error) on a row at `width`."""
        used = sum(self._widths()) + self._gap() * len(self._widths()) + 3  # cell padding, scrollbar
        return max(12, width - used)

    def keep(self, keys: set[str]) -> None:
        """Forget the cells of runs no longer shown."""
        self._cells = {key: cells for key, cells in self._cells.items() if key in keys}

    def cells(self, run: RunSummary, marked: bool, now: datetime, last_width: int,
              uncertain: bool = False) -> list[Text]:
        """The run's row: one cell with every field in its place (`uncertain`: the run waits on a person to settle
        an uncertain effect)."""
        wide = bool(self.wide)
        label, style = run_label(run, uncertain)
        shown = (wide, marked, label, style,
                 short_id(run.run_id), truncate(run.workflow, 24 if wide else 14),
                 trigger_label(run.trigger, short=not wide), short_id(run.def_hash) if wide else None,
                 format_age(run.created_at, now), format_duration(run_elapsed(run.created_at, run.finished_at, now)),
                 truncate(activity(run, now, wide), last_width), activity_style(run))
        last = self._cells.get(run.run_id)
        if last is not None and last[0] == shown:
            return last[1]
        _, marked, label, style, short, workflow, trigger, version, age, duration, step, step_style = shown
        fields = [Text(MARK if marked else " ", style="bold yellow"), Text(label, style=style), Text(short),
                  Text(workflow), Text(trigger, style="" if run.trigger else "dim")]
        if version is not None:
            fields.append(Text(version, style="dim"))
        fields += [Text(age), Text(duration), Text(step, style=step_style)]
        cells = [line(fields, self._widths(), self._gap())]
        self._cells[run.run_id] = (shown, cells)
        return cells
