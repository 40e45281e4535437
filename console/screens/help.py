"""`?`: the keys of the screen underneath, gathered from its live bindings (so it never goes stale)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static


def binding_rows(screen: Screen[object]) -> list[tuple[str, str]]:
    """(key, description) for every enabled binding of `screen`, focused widget first, app last."""
    app = screen.app
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if not active.enabled or binding.action.startswith("refuse") or not binding.description:
            continue
        label = app.get_key_display(binding)
        if (label, binding.description) in {(r[0], r[1]) for r in rows} or key in seen:
            continue
        seen.add(key)
        rows.append((label, binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss_help", "Close"),
    ]

    def __init__(self, title: str, rows: list[tuple[str, str]], readonly: bool) -> None:
        super().__init__()
        self.title_text = title
        self.rows = rows
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        text = Text()
        width = max((len(k) for k, _ in self.rows), default=4) + 2
        for key, description in self.rows:
            text.append(f"{key:>{width}}  ", style="bold")
            text.append(description + "\n")
        if self.readonly:
            text.append("\nRead-only: cancel, approve, reject and resolve are disabled.\n", style="yellow")
        with Vertical(id="help"):
            yield Label(f"Keys: {self.title_text}", id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(text, id="help-keys")
            yield Label("esc or ? to close", id="help-hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
