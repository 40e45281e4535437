"""The span waterfall: a run's stored spans as bars on a time axis, nested by parent, virtualised.

`order_spans`, `span_role` and `bar_cells` are pure (no Textual). `SpanWaterfall` is a ScrollView
that renders only the lines on screen (`render_line`), so a run with thousands of spans opens and
scrolls as fast as one with ten. The first line is the time axis and stays put while rows scroll.

Keys: j/k move, g/G ends, z zooms the axis to the selected span, +/- zoom in/out around it, 0 resets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.formatting import format_clock_ms, format_duration, truncate
from worker.models import SpanView

LABEL_MAX = 28
TAIL = 8  # " 12m05s✓"
MIN_WINDOW = 0.001  # seconds: the deepest zoom

WAIT_NAMES = frozenset({"approval wait", "sleep", "child workflow", "uncertain effect: waiting for a human"})

# role -> (bar character, Rich style); an error status overrides the style
ROLE_BARS: dict[str, tuple[str, str]] = {
    "run": ("▔", "bold blue"),
    "step": ("━", "blue"),
    "attempt": ("█", "green"),
    "queue": ("░", "yellow"),
    "wait": ("▒", "magenta"),
    "call": ("▆", "cyan"),
    "other": ("▬", "white"),
}
ERROR_STYLE = "bold red"
LEGEND = "█ attempt ░ queued ▒ wait ━ step ▆ call, red: failed/crashed · z zoom +/- 0"


def span_role(span: SpanView) -> str:
    """What a span stands for in the engine: run, step, attempt, queue (delay), wait, call, other."""
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    if span.name == "queued":
        return "queue"
    if span.name in WAIT_NAMES or "agentrt.wait.reason" in attrs:
        return "wait"
    if span.name.startswith("run ") or span.name == "run":
        return "run"
    if span.name.startswith("step "):
        return "step"
    if " attempt " in span.name:
        return "attempt"
    if span.kind == "client":
        return "call"
    return "other"


def is_crashed(span: SpanView) -> bool:
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    return bool(attrs.get("agentrt.attempt.crashed")) or attrs.get("agentrt.attempt.outcome") == "crashed"


@dataclass(frozen=True, slots=True)
class SpanRow:
    span: SpanView
    depth: int
    role: str
    failed: bool
    crashed: bool

    @property
    def seconds(self) -> float:
        return max(0.0, (self.span.end - self.span.start).total_seconds())


def order_spans(spans: Sequence[SpanView]) -> list[SpanRow]:
    """Depth-first by parent, siblings by start time (queue delay before the attempt it delays)."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanView]] = {}
    for s in spans:
        parent = s.parent_id if s.parent_id in ids and s.parent_id != s.span_id else None
        children.setdefault(parent, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: (s.start, s.name))
    rows: list[SpanRow] = []
    seen: set[str] = set()
    stack: list[tuple[SpanView, int]] = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        if span.span_id in seen:  # a cycle in bad data must not loop forever
            continue
        seen.add(span.span_id)
        crashed = is_crashed(span)
        rows.append(SpanRow(span, depth, span_role(span), span.status == "error" or crashed, crashed))
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))
    # spans only reachable through a cycle: still shown, at the top level
    rows.extend(SpanRow(s, 0, span_role(s), s.status == "error", is_crashed(s)) for s in spans
                if s.span_id not in seen)
    return rows


def bar_cells(start: float, end: float, w0: float, w1: float, width: int) -> tuple[int, int, bool, bool]:
    """(offset, length, cut on the left, cut on the right) of [start, end] on the window [w0, w1].

    Times are seconds from the run's first span. A span outside the window has length 0 and says on
    which side it is; anything inside gets at least one cell.
    """
    total = max(w1 - w0, MIN_WINDOW)
    if end < w0:
        return 0, 0, True, False
    if start > w1:
        return width, 0, False, True
    scale = width / total
    left, right = max(start, w0), min(end, w1)
    offset = min(int((left - w0) * scale), width - 1)
    length = max(1, min(round((right - left) * scale), width - offset))
    return offset, length, start < w0, end > w1


def _tick(seconds: float) -> str:
    return "0s" if seconds <= 0 else format_duration(seconds)


def axis_text(w0: float, w1: float, width: int) -> str:
    """`0s ────── 6.2s ────── 12s` across the bar area, in seconds since the first span."""
    if width <= 0:
        return ""
    left, right, mid = (_tick(w0), _tick(w1), _tick((w0 + w1) / 2))
    line = ["─"] * width
    line[: len(left)] = list(left)
    if width > len(left) + len(mid) + len(right) + 4:
        start = width // 2 - len(mid) // 2
        line[start: start + len(mid)] = list(mid)
    if width > len(left) + len(right) + 1:
        line[width - len(right):] = list(right)
    return "".join(line)[:width]


class SpanWaterfall(ScrollView, can_focus=True):
    """Bars for spans. `set_spans` feeds it; only visible lines are rendered."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "cursor(1)", "Down", show=False),
        Binding("k,up", "cursor(-1)", "Up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("g,home", "ends(0)", "Top", show=False),
        Binding("G,end", "ends(1)", "Bottom", show=False),
        Binding("z", "zoom_span", "Zoom to span"),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in"),
        Binding("minus", "zoom(2.0)", "Zoom out"),
        Binding("0", "zoom_reset", "Whole run", show=False),
    ]

    DEFAULT_CSS = """
    SpanWaterfall { height: 1fr; width: 1fr; scrollbar-size-vertical: 1; }
    """

    class Highlighted(Message):
        """The cursor moved onto `row` (None when there are no spans)."""

        def __init__(self, chart: SpanWaterfall, row: SpanRow | None) -> None:
            super().__init__()
            self.chart = chart
            self.row = row

        @property
        def control(self) -> SpanWaterfall:
            return self.chart

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[SpanRow] = []
        self.cursor = 0
        self.t0: datetime | None = None
        self.extent = 0.0
        """Seconds from the first span's start to the last span's end."""
        self.window: tuple[float, float] = (0.0, 0.0)
        """The part of the axis on screen (seconds since t0): zoom changes it."""
        self._starts: list[float] = []
        self._ends: list[float] = []

    # -- data --------------------------------------------------------------------------------
    def set_spans(self, spans: Sequence[SpanView]) -> None:
        """Show these spans; the cursor stays on the same span and the zoom is kept if it still fits."""
        keep = self.rows[self.cursor].span.span_id if self.rows and self.cursor < len(self.rows) else None
        first = not self.rows
        self.rows = order_spans(spans)
        if self.rows:
            self.t0 = min(r.span.start for r in self.rows)
            self._starts = [(r.span.start - self.t0).total_seconds() for r in self.rows]
            self._ends = [(r.span.end - self.t0).total_seconds() for r in self.rows]
            self.extent = max(max(self._ends), MIN_WINDOW)
        else:
            self.t0, self._starts, self._ends, self.extent = None, [], [], 0.0
        if first or self.window[1] <= self.window[0] or self.window == (0.0, 0.0):
            self.window = (0.0, self.extent)
        ids = [r.span.span_id for r in self.rows]
        self.cursor = ids.index(keep) if keep in ids else min(self.cursor, max(0, len(self.rows) - 1))
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)
        self.refresh()
        self.post_message(self.Highlighted(self, self.selected))

    @property
    def selected(self) -> SpanRow | None:
        return self.rows[self.cursor] if self.rows else None

    @property
    def zoomed(self) -> bool:
        return self.window != (0.0, self.extent)

    # -- geometry ----------------------------------------------------------------------------
    def _widths(self) -> tuple[int, int]:
        width = self.scrollable_content_region.width or self.size.width or 80
        label_w = min(LABEL_MAX, max(8, width // 3))
        bar_w = max(4, width - label_w - 1 - TAIL)
        return label_w, bar_w

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)

    # -- painting ----------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        base = self.rich_style
        label_w, bar_w = self._widths()
        if y == 0:
            if not self.rows:
                return Strip([Segment("No spans stored for this run.", base + Style(dim=True))]).adjust_cell_length(
                    width, base)
            zoom = " zoom" if self.zoomed else ""
            head = truncate(f"{len(self.rows)} spans{zoom}", label_w).ljust(label_w) + " "
            return Strip([Segment(head, base + Style(bold=True)),
                          Segment(axis_text(*self.window, bar_w), base + Style(dim=True))]).adjust_cell_length(
                width, base)
        index = self.scroll_offset.y + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        return self._row_strip(index, label_w, bar_w, width, base)

    def _row_strip(self, index: int, label_w: int, bar_w: int, width: int, base: Style) -> Strip:
        row = self.rows[index]
        char, style_name = ROLE_BARS.get(row.role, ROLE_BARS["other"])
        style = Style.parse(ERROR_STYLE if row.failed else style_name)
        cursor = index == self.cursor
        label_style = base + Style(reverse=True, bold=True) if cursor and self.has_focus else (
            base + Style(reverse=True) if cursor else base)
        indent = "  " * min(row.depth, 6)
        label = (indent + truncate(row.span.name, label_w - len(indent))).ljust(label_w)[:label_w]
        offset, length, cut_left, cut_right = bar_cells(self._starts[index], self._ends[index], *self.window, bar_w)
        segments = [Segment(label, label_style), Segment(" ", base)]
        if length == 0:
            marker = "◂" if cut_left else "▸"
            pad = 0 if cut_left else bar_w - 1
            segments += [Segment(" " * pad, base), Segment(marker, base + Style(dim=True)),
                         Segment(" " * (bar_w - pad - 1), base)]
        else:
            bar = char * length
            if cut_left:
                bar = "◂" + bar[1:]
            if cut_right:
                bar = bar[:-1] + "▸"
            segments += [Segment(" " * offset, base), Segment(bar, base + style),
                         Segment(" " * (bar_w - offset - length), base)]
        if row.crashed:
            tail = f" {'crash':>6}✗"
        else:
            glyph = "✗" if row.failed else ("✓" if row.span.status == "ok" else " ")
            tail = f" {format_duration(row.seconds):>6}{glyph}"
        segments.append(Segment(tail, base + (Style.parse(ERROR_STYLE) if row.failed else Style(dim=True))))
        return Strip(segments).adjust_cell_length(width, base)

    # -- cursor and zoom ---------------------------------------------------------------------
    def _visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, index: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(index, len(self.rows) - 1))
        top, visible = self.scroll_offset.y, self._visible_rows()
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)
        self.refresh()
        self.post_message(self.Highlighted(self, self.selected))

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * self._visible_rows())

    def action_ends(self, last: int) -> None:
        self.move_cursor(len(self.rows) - 1 if last else 0)

    def _set_window(self, w0: float, w1: float) -> None:
        span = max(w1 - w0, MIN_WINDOW)
        span = min(span, self.extent)
        w0 = max(0.0, min(w0, self.extent - span))
        self.window = (w0, w0 + span)
        self.refresh()

    def action_zoom_span(self) -> None:
        """Fit the axis to the selected span (a step: its attempts and delays fill the width)."""
        if not self.rows:
            return
        start, end = self._starts[self.cursor], self._ends[self.cursor]
        pad = max((end - start) * 0.02, MIN_WINDOW)
        self._set_window(start - pad, end + pad)

    def action_zoom(self, factor: float) -> None:
        if not self.rows:
            return
        w0, w1 = self.window
        centre = (self._starts[self.cursor] + self._ends[self.cursor]) / 2
        if not (w0 <= centre <= w1):
            centre = (w0 + w1) / 2
        half = (w1 - w0) * factor / 2
        self._set_window(centre - half, centre + half)

    def action_zoom_reset(self) -> None:
        self._set_window(0.0, self.extent)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


def span_detail(row: SpanRow | None, width: int) -> Text:
    """Two lines under the span waterfall: the selected span, then the legend."""
    out = Text(no_wrap=True, overflow="ellipsis")
    if row is not None:
        s = row.span
        out.append(s.name, style="bold")
        out.append(f"  {row.role} · {format_duration(row.seconds)} · {format_clock_ms(s.start)}", style="dim")
        if row.crashed:
            out.append("  crashed", style="bold red")
        if s.status_message:
            out.append(f"  {s.status_message}", style="red" if row.failed else "")
        out.truncate(max(10, width), overflow="ellipsis")
    out.append("\n" + LEGEND[: max(10, width)], style="dim")
    return out
