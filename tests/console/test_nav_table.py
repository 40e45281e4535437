"""NavTable.show_rows: a live list changes in place (rows kept, cursor kept), and still ends up exactly as asked."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult

from console.widgets.nav_table import NavTable


class TableApp(App[None]):
    """A NavTable with one column per key (titled in capitals)."""

    def __init__(self, *columns: str) -> None:
        super().__init__()
        self.columns = columns

    def compose(self) -> ComposeResult:
        yield NavTable(id="t")

    def on_mount(self) -> None:
        for key in self.columns:
            self.query_one(NavTable).add_column(key.upper(), key=key)


def cells(key: str, step: str = "fetch") -> list[Any]:
    return [Text(key), Text("running", style="green"), step]


def shown(table: NavTable) -> list[tuple[str | None, list[str]]]:
    return [(row.key.value, [str(c) for c in table.get_row(row.key)]) for row in table.ordered_rows]


async def test_new_row_on_top_old_row_gone_and_a_changed_cell_keep_the_other_rows_and_the_cursor() -> None:
    app = TableApp("a", "b", "c")
    async with app.run_test() as pilot:
        table = app.query_one(NavTable)
        keys = [f"r{i}" for i in range(10, 0, -1)]  # newest first
        table.show_rows([(k, cells(k)) for k in keys])
        table.move_cursor(row=3)
        await pilot.pause()
        assert table.selected_key() == "r7"
        kept = {k: table.rows[k] for k in keys[:-1]}

        keys = ["r11", *keys[:-1]]  # r11 started, r1 fell off the end
        table.show_rows([(k, cells(k, "charge" if k == "r9" else "fetch")) for k in keys])
        await pilot.pause()

        assert [k for k, _ in shown(table)] == keys
        assert dict(shown(table))["r9"] == ["r9", "running", "charge"]
        assert dict(shown(table))["r11"] == ["r11", "running", "fetch"]
        assert table.selected_key() == "r7", "the cursor stays on the run it was on"
        assert all(table.rows[k] is row for k, row in kept.items()), "kept rows were not rebuilt"
        assert table.shows("r11") and not table.shows("r1")


async def test_reordering_and_a_mostly_new_list_and_cells_updated_directly() -> None:
    app = TableApp("a", "b", "c")
    async with app.run_test() as pilot:
        table = app.query_one(NavTable)
        table.show_rows([(k, cells(k)) for k in ("x", "y", "z")])
        table.update_cell("y", "c", "marked")  # outside show_rows: the table still knows what it shows
        table.show_rows([(k, cells(k, "marked" if k == "y" else "fetch")) for k in ("z", "y", "x")])
        await pilot.pause()
        assert [k for k, _ in shown(table)] == ["z", "y", "x"]
        assert dict(shown(table))["y"][2] == "marked"

        table.show_rows([(k, cells(k)) for k in ("p", "q", "x")])  # most rows new: rebuilt
        await pilot.pause()
        assert shown(table) == [("p", ["p", "running", "fetch"]), ("q", ["q", "running", "fetch"]),
                                ("x", ["x", "running", "fetch"])]
        table.show_rows([])
        assert table.row_count == 0 and not table.shows("x")


async def test_a_row_that_did_not_change_is_not_drawn_again_and_a_changed_one_is() -> None:
    app = TableApp("a", "b")
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(NavTable)
        table.show_rows([(k, [Text(k), Text("fetch")]) for k in ("r1", "r2", "r3")])
        await pilot.pause()
        first, second, third = (table.render_line(y) for y in (1, 2, 3))  # line 0: the header
        assert "r1" in first.text and "fetch" in second.text

        table.update_row("r2", [Text("r2"), Text("stage")])
        await pilot.pause()
        assert "stage" in table.render_line(2).text
        assert table.render_line(1) is first and table.render_line(3) is third

        table.update_row("r2", [Text("r2"), Text("charge the card")])  # wider than its column: widened
        await pilot.pause()
        assert "charge the card" in table.render_line(2).text
        first, third = table.render_line(1), table.render_line(3)

        table.move_cursor(row=2)  # the cursor leaves r1 and lands on r3: both drawn again, r2 kept
        await pilot.pause()
        assert table.render_line(1) is not first and table.render_line(3) is not third
        assert table.render_line(1).text == first.text


async def test_strings_are_shown_as_typed_not_as_markup() -> None:
    app = TableApp("step")
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(NavTable)
        table.add_row("[bold]deploy[/bold]", key="a")
        table.show_rows([("b", ["charge [red]card[/]"])])
        await pilot.pause()
        assert [str(c) for c in table.get_row("b")] == ["charge [red]card[/]"]
        table.update_cell("b", "step", "[i]x[/i]")
        await pilot.pause()
        assert "[i]x[/i]" in table.render_line(1).text
