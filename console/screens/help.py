"""`?`: the keys of the screen underneath, gathered from its live bindings (so it never goes stale)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

_NOISE = ("focus_next", "focus_previous", "copy_text", "help_quit")
_NAV_KEYS = frozenset({"j", "k", "g", "G", "enter", "space", "up", "down"})


def binding_rows(screen: Screen[object]) -> list[tuple[str, str]]:
    """(key, description) rows of the enabled bindings of `screen`, in three sections:
    the screen's own keys, then keys that work everywhere, then the focused widget's navigation keys.
    Section headings are rows with an empty key.
    """
    app = screen.app
    sections: dict[str, list[tuple[str, str]]] = {"This screen": [], "Everywhere": [], "Navigation": []}
    for _key, active in screen.active_bindings.items():
        binding = active.binding
        if (not active.enabled or not binding.description or binding.action.startswith("refuse")
                or any(noise in binding.action for noise in _NOISE)):
            continue
        if active.node is screen:
            section = "This screen"
        elif active.node is app:
            section = "Everywhere"
        elif binding.key in _NAV_KEYS:
            section = "Navigation"
        else:
            continue
        row = (app.get_key_display(binding), binding.description)
        if row not in sections[section]:
            sections[section].append(row)
    rows: list[tuple[str, str]] = []
    for title, entries in sections.items():
        if entries:
            rows.append(("", title))
            rows.extend(entries)
    return rows


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss_help", "Close"),
    ]

    def __init__(self, title: str, rows: list[tuple[str, str]], readonly: bool, notes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.title_text = title
        self.rows = rows
        self.readonly = readonly
        self.notes = notes
        """What the screen's keys take (a filter's syntax), under the keys."""

    def _column(self, rows: list[tuple[str, str]]) -> Text:
        text = Text()
        width = max((len(k) for k, _ in rows), default=4)
        for key, description in rows:
            if not key:
                text.append(f"{description}\n", style="bold underline")
                continue
            text.append(f"{key:>{width}}  ", style="bold")
            text.append(description + "\n")
        return text

    def compose(self) -> ComposeResult:
        split = next((i for i, (k, d) in enumerate(self.rows) if not k and d == "Everywhere"), len(self.rows))
        end = next((i for i, (k, d) in enumerate(self.rows) if not k and d == "Navigation"), len(self.rows))
        left = self.rows[:split] + self.rows[end:]
        right = self.rows[split:end]
        with Vertical(id="help"):
            yield Label(f"Keys: {self.title_text}", id="help-title")
            with VerticalScroll(id="help-scroll"):
                with Horizontal(id="help-columns"):
                    yield Static(self._column(left), id="help-screen-keys")
                    yield Static(self._column(right), id="help-global-keys")
                if self.notes:
                    yield Static("\n".join(self.notes), id="help-notes", markup=False)
            if self.readonly:
                yield Label("Read-only: every action that changes the runtime is disabled.", id="help-readonly")
            yield Label("esc or ? to close", id="help-hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
