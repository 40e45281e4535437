"""The runs table's rows: one cell per row holding every field laid out in its place, under a header laid out
like the rows. DataTable renders each cell on its own, at a cost, and a live list re-renders rows many times a
second: one cell per row is a third of the work of nine.

Narrow (under WIDE columns, 80x24 over SSH): mark, status, run, workflow, trigger (a short word), started,
duration, then the step, or for a run parked on an event what it waits for and the time left, or a failed
run's error. Wide: the definition version too, the trigger's whole word, and the step followed by the wait.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from console.formatting import (
    format_age,
    format_duration,
    run_elapsed,
    short_id,
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


def run_lines(runs: list[RunSummary]) -> list[str]:
    """The first runs of a bulk action, one line each, for its confirmation."""
    lines = [f"{short_id(r.run_id)}  {truncate(r.workflow, 24):<24}  {status_label(r.status)}" for r in runs[:6]]
    if len(runs) > 6:
        lines.append(f"… and {len(runs) - 6} more")
    return lines


def activity(run: RunSummary, now: datetime, wide: bool) -> str:
    """The row's last field: the step; for a parked run what it waits for (an event's name and key; the
    time left); for a queued run its concurrency key; for a failed run its error."""
    if run.status is RunStatus.FAILED and run.error:
        return run.error
    if run.status is RunStatus.QUEUED and run.concurrency_key is not None:
        return f"key {run.concurrency_key}"
    step = run.current_step or ""
    if run.status is not RunStatus.WAITING:
        return step
    kind = wait_kind(run.waiting_on)
    if not wide:  # the status says the kind already: an event's name and key matter, other waits' step
        if kind == "event" and run.waiting_on:
            return wait_text(run.waiting_on.removeprefix("event "), run.wake_at, now)
        return step
    detail = wait_text(run.waiting_on, run.wake_at, now, human=False)
    return " · ".join(part for part in (step, detail) if part)


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

    def cells(self, run: RunSummary, marked: bool, now: datetime, last_width: int) -> list[Text]:
        """The run's row: one cell with every field in its place."""
        wide = bool(self.wide)
        failed = run.status is RunStatus.FAILED and bool(run.error)
        shown = (wide, marked, status_label(run.status, waiting_on=run.waiting_on), status_style(run.status),
                 short_id(run.run_id), truncate(run.workflow, 24 if wide else 14),
                 trigger_label(run.trigger, short=not wide), short_id(run.def_hash) if wide else None,
                 format_age(run.created_at, now), format_duration(run_elapsed(run.created_at, run.finished_at, now)),
                 truncate(activity(run, now, wide), last_width), failed)
        last = self._cells.get(run.run_id)
        if last is not None and last[0] == shown:
            return last[1]
        _, marked, label, style, short, workflow, trigger, version, age, duration, step, _ = shown
        fields = [Text(MARK if marked else " ", style="bold yellow"), Text(label, style=style), Text(short),
                  Text(workflow), Text(trigger, style="" if run.trigger else "dim")]
        if version is not None:
            fields.append(Text(version, style="dim"))
        fields += [Text(age), Text(duration), Text(step, style="red" if failed else "")]
        cells = [line(fields, self._widths(), self._gap())]
        self._cells[run.run_id] = (shown, cells)
        return cells
