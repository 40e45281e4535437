"""DataTable and Tree with vi-style keys (j/k/g/G), as an on-call engineer's fingers expect."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Tree

_VI_KEYS: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
    Binding("g", "scroll_top", "Top", show=False),
    Binding("G", "scroll_bottom", "Bottom", show=False),
]


class NavTable(DataTable[Any]):
    """A row-cursor DataTable with j/k/g/G."""

    BINDINGS: ClassVar[list[BindingType]] = _VI_KEYS

    DEFAULT_CSS = """
    NavTable { height: 1fr; scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)

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
