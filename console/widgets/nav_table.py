"""DataTable and Tree with vi-style keys (j/k/g/G), as an on-call engineer's fingers expect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text, TextType
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.strip import Strip
from textual.widgets import DataTable, Tree
from textual.widgets.data_table import ColumnKey, RowKey

_VI_KEYS: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
    Binding("g", "scroll_top", "Top", show=False),
    Binding("G", "scroll_bottom", "Bottom", show=False),
]


def _literal(cell: Any) -> Any:
    """A string cell as literal text: DataTable would parse it as markup (a step named "[x]" would vanish)."""
    return Text(cell, end="", no_wrap=True) if isinstance(cell, str) else cell


class NavTable(DataTable[Any]):
    """A row-cursor DataTable with j/k/g/G."""

    BINDINGS: ClassVar[list[BindingType]] = _VI_KEYS

    DEFAULT_CSS = """
    NavTable { height: 1fr; scrollbar-size-vertical: 1; }
    """

    REBUILD_SHARE = 0.5
    """`show_rows` rebuilds the table when more than this share of its rows come or go."""

    LINES_CACHED = 500
    """Rendered row lines kept (see `render_line`): a few screenfuls, with and without the cursor."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._shown: dict[str, list[Any]] = {}
        """The cells `show_rows`/`update_row` put in each row, by row key."""
        self._edits = 0
        self._row_edit: dict[RowKey, int] = {}
        """The edit that last changed each row (part of the key its rendered line is cached under)."""
        self._single_lines = True
        """Every row is one line high (rows are cached by line only then)."""
        self._lines: LRUCache[tuple[Any, ...], Strip] = LRUCache(self.LINES_CACHED)
        # DataTable keys its own render caches by a counter that every change bumps, so a live table fills
        # them with lines nobody draws again (10,000 cells: megabytes of Strips, and long garbage
        # collections). With `_lines` in front, a frame's worth is all they need to hold.
        self._cell_render_cache.maxsize = 2000
        for cache in (self._row_render_cache, self._line_cache, self._row_renderable_cache):
            cache.maxsize = 300

    def clear(self, columns: bool = False) -> NavTable:
        self._shown = {}
        self._row_edit = {}
        self._single_lines = True
        self._lines.clear()
        super().clear(columns)
        return self

    def _edited(self, row_key: RowKey) -> None:
        self._edits += 1
        self._row_edit[row_key] = self._edits

    def render_line(self, y: int) -> Strip:
        """A line of the table, reused while the row, its cursor/hover state and the layout are unchanged.

        DataTable drops all its rendered lines on any change (a cell update, a cursor move), so a live
        list that changes a few times a second redraws every visible row every time: 40 rows cost tens of
        milliseconds a frame on a busy machine, which delays the live feed behind it. Here a line is
        rendered again only when something it shows changed.
        """
        header = self.header_height if self.show_header else 0
        if y < header or not self._single_lines or self.fixed_rows or self.fixed_columns:
            return super().render_line(y)
        index = y - header + int(self.scroll_y)
        rows = self.ordered_rows
        if index >= len(rows):
            return super().render_line(y)
        row_key = rows[index].key
        cursor, hover = self.cursor_coordinate, self.hover_coordinate
        key = (row_key, self._row_edit.get(row_key), int(self.scroll_x), self.size.width,
               tuple((c.key, c.get_render_width(self)) for c in self.ordered_columns),
               self.show_cursor and cursor.row == index, hover.row == index and self._show_hover_cursor,
               self.cursor_type, self.rich_style, self.has_focus, self.mouse_hover, self.disabled, self.app.theme)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = super().render_line(y)
        return line

    def shows(self, key: str) -> bool:
        """Whether row `key` was put in the table by `show_rows`."""
        return key in self._shown

    def show_rows(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Show `rows` ((key, cells), in this order), touching only what changed, and keep the cursor on its row.

        A live list mostly changes a few cells, or gains a row at the top and loses one at the bottom.
        DataTable measures every cell of every row added, so rebuilding 500 rows for that blocks the UI
        for a noticeable time; here only new rows are added (and measured), gone rows removed, and the
        rows put in order. Rows are told apart in the ordering by their cell objects (pass fresh ones).
        """
        keep = self.selected_key()
        wanted = {key: [_literal(cell) for cell in cells] for key, cells in rows}
        added = [key for key in wanted if key not in self._shown]
        gone = [key for key in self._shown if key not in wanted]
        if len(self._shown) != self.row_count or (len(added) + len(gone)) > self.REBUILD_SHARE * max(len(wanted), 1):
            self.clear()
            for key, cells in wanted.items():
                self.add_row(*cells, key=key)
            self._shown = wanted
            self.restore_cursor(keep)
            return
        for key in gone:
            self.remove_row(key)
            del self._shown[key]
        for key, cells in wanted.items():
            if key in self._shown:
                self.update_row(key, cells)
        for key in added:
            self.add_row(*wanted[key], key=key)
            self._shown[key] = wanted[key]
        order = list(wanted)
        if [row.key.value for row in self.ordered_rows] != order:
            rank = {tuple(map(id, self._shown[key])): i for i, key in enumerate(order)}
            self.sort(key=lambda cells: rank[tuple(map(id, cells))])
        self.restore_cursor(keep)

    def update_row(self, key: str, cells: Sequence[Any]) -> None:
        """Put `cells` in the row `key`, updating only the cells that differ from what it shows."""
        shown = self._shown[key]
        columns = [column.key for column in self.ordered_columns]
        for i, cell in enumerate(cells):
            if shown[i] is cell:
                continue
            cell = _literal(cell)
            if shown[i] != cell:
                self.update_cell(key, columns[i], cell)

    def add_row(self, *cells: Any, height: int | None = 1, key: str | None = None,
                label: TextType | None = None) -> RowKey:
        if height != 1 or label is not None:
            self._single_lines = False
        row_key = super().add_row(*map(_literal, cells), height=height, key=key, label=label)
        self._edited(row_key)
        return row_key

    def update_cell(self, row_key: RowKey | str, column_key: ColumnKey | str, value: Any, *,
                    update_width: bool = False) -> None:
        value = _literal(value)
        column = self.columns.get(column_key if isinstance(column_key, ColumnKey) else ColumnKey(column_key))
        if column is not None and column.auto_width and isinstance(value, Text):
            # wider than its column: widen it (DataTable would crop it); narrower ones leave the width be
            update_width = update_width or value.cell_len > column.content_width
        super().update_cell(row_key, column_key, value, update_width=update_width)
        key = row_key if isinstance(row_key, RowKey) else RowKey(row_key)
        self._edited(key)
        shown = self._shown.get(key.value) if key.value is not None else None
        if shown is not None:
            shown[self.get_column_index(column_key)] = value

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def restore_cursor(self, key: str | None) -> None:
        """Put the cursor back on the row `key` after a reload (or keep the row index)."""
        if self.row_count == 0:
            return
        if key is not None:
            try:
                self.move_cursor(row=self.get_row_index(key), animate=False)
                return
            except Exception:  # noqa: BLE001 - the row is gone: keep the index, clamped
                pass
        self.move_cursor(row=min(self.cursor_row, self.row_count - 1), animate=False)


class NavTree(Tree[Any]):
    """A Tree with j/k/g/G."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "cursor_first", "Top", show=False),
        Binding("G", "cursor_last", "Bottom", show=False),
    ]

    def action_cursor_first(self) -> None:
        self.cursor_line = 0
        self.scroll_to_line(0, animate=False)

    def action_cursor_last(self) -> None:
        self.cursor_line = self.last_line
        self.scroll_to_line(self.last_line, animate=False)
