"""A time waterfall of step attempts: one text bar per attempt on a shared time axis.

`layout_waterfall` is pure (no Textual) and does the arithmetic; `Waterfall` only paints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from console.formatting import format_duration, status_glyph, status_style, truncate

LABEL_MAX = 22
TAIL = 8  # " 12m05s✓"


@dataclass(frozen=True, slots=True)
class Span:
    """One attempt: `end` is None while it is still going (drawn up to now)."""

    label: str
    start: datetime | None
    end: datetime | None
    status: str


@dataclass(frozen=True, slots=True)
class BarRow:
    label: str
    offset: int  # cells from the left edge of the bar area
    length: int  # at least 1 cell for anything that started
    seconds: float | None
    status: str


def layout_waterfall(spans: Sequence[Span], bar_width: int, now: datetime) -> tuple[list[BarRow], float]:
    """Place each span on a common axis `bar_width` cells wide; returns rows and the axis length (s)."""
    started = [s.start for s in spans if s.start is not None]
    if not started or bar_width <= 0:
        return [BarRow(s.label, 0, 0, None, s.status) for s in spans], 0.0
    t0 = min(started)
    t1 = max([(s.end or now) for s in spans if s.start is not None] + started)
    total = max((t1 - t0).total_seconds(), 0.001)
    scale = bar_width / total
    rows: list[BarRow] = []
    for s in spans:
        if s.start is None:
            rows.append(BarRow(s.label, 0, 0, None, s.status))
            continue
        end = s.end or now
        begin = (s.start - t0).total_seconds()
        seconds = max((end - s.start).total_seconds(), 0.0)
        offset = min(int(begin * scale), bar_width - 1)
        length = max(1, min(round(seconds * scale), bar_width - offset))
        rows.append(BarRow(s.label, offset, length, seconds, s.status))
    return rows, total


def axis_line(total: float, bar_width: int) -> str:
    """`0s ────── 6.2s ────── 12s` across the bar area."""
    if bar_width <= 0:
        return ""
    left, right = "0s", format_duration(total)
    mid = format_duration(total / 2)
    line = ["─"] * bar_width
    line[: len(left)] = list(left)
    if bar_width > len(left) + len(mid) + len(right) + 4:
        start = bar_width // 2 - len(mid) // 2
        line[start: start + len(mid)] = list(mid)
    line[bar_width - len(right):] = list(right)
    return "".join(line)[:bar_width]


class Waterfall(Widget):
    """Text bars for attempts; `set_spans` feeds it, width follows the terminal."""

    DEFAULT_CSS = """
    Waterfall { height: auto; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._spans: list[Span] = []
        self._now: datetime | None = None

    def set_spans(self, spans: Sequence[Span], now: datetime) -> None:
        self._spans = list(spans)
        self._now = now
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self._spans) + 1)

    def render(self) -> Text:
        if not self._spans or self._now is None:
            return Text("No attempts yet.", style="dim")
        width = self.size.width or 80
        label_w = min(LABEL_MAX, max(len(s.label) for s in self._spans), max(8, width // 3))
        bar_w = max(4, width - label_w - 1 - TAIL)
        rows, total = layout_waterfall(self._spans, bar_w, self._now)
        out = Text(no_wrap=True, overflow="crop")
        out.append(" " * (label_w + 1) + axis_line(total, bar_w) + "\n", style="dim")
        for i, row in enumerate(rows):
            out.append(truncate(row.label, label_w).ljust(label_w) + " ")
            out.append(" " * row.offset)
            out.append("█" * row.length, style=status_style(row.status) or "")
            out.append(" " * (bar_w - row.offset - row.length))
            out.append(f" {format_duration(row.seconds):>6}{status_glyph(row.status)}", style=status_style(row.status))
            if i < len(rows) - 1:
                out.append("\n")
        return out
