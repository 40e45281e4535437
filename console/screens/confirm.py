"""Dialogs: yes/no confirmation, a required reason, and the choice for an uncertain effect.

Every dialog defaults to the harmless answer: `enter` on a fresh dialog cancels; `y` (or the
button) confirms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmDialog(ModalScreen[bool]):
    """Ask before doing something; returns True only on an explicit yes."""

    CSS_PATH = "confirm.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str | Content, *, confirm_label: str = "Yes", cancel_label: str = "No",
                 danger: bool = False) -> None:
        super().__init__()
        self.cancel_label = cancel_label
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="title")
            yield Static(self.body, id="body")
            with Horizontal(id="buttons"):
                yield Button(f"{self.confirm_label} (y)", id="yes", variant="error" if self.danger else "primary",
                             compact=True)
                yield Button(f"{self.cancel_label} (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.set_class(self.danger, "-danger")
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ReasonPrompt(ModalScreen[str | None]):
    """Ask for a reason; returns the text, or None when cancelled. A required reason cannot be blank."""

    CSS_PATH = "confirm.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str | Content = "", *, required: bool = True,
                 placeholder: str = "reason") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.required = required
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="title")
            if self.body:
                yield Static(self.body, id="body")
            yield Input(placeholder=self.placeholder + (" (required)" if self.required else ""), id="reason")
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("OK (enter)", id="ok", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        text = self.query_one(Input).value.strip()
        if self.required and not text:
            self.query_one("#error", Label).update("A reason is required.")
            self.query_one(Input).focus()
            return
        self.dismiss(text)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True, slots=True)
class ResolveChoice:
    action: str  # "retry" | "done" | "fail"
    output: Any = None
    reason: str | None = None


_RESOLVE_HELP = (
    "The worker stopped while this call was in flight: it may or may not have taken effect.\n"
    "  retry  call again with the same idempotency key\n"
    "  done   it happened: continue with the output below (JSON, optional)\n"
    "  fail   it did not happen and must not be retried: fail the step"
)


class ResolveDialog(ModalScreen[ResolveChoice | None]):
    """Settle an uncertain effect: retry / done / fail, with an optional reason and output."""

    CSS_PATH = "confirm.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "choose('retry')", "Retry"),
        Binding("d", "choose('done')", "Done"),
        Binding("f", "choose('fail')", "Fail"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, prompt: str, where: str) -> None:
        super().__init__()
        self.prompt = prompt
        self.where = where

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Resolve uncertain effect", id="title")
            yield Static(Content.assemble((self.prompt, "bold"), "\n", (self.where, "dim")), id="body")
            yield Static(_RESOLVE_HELP, id="help")
            yield Input(placeholder="reason (optional)", id="reason", compact=True)
            yield Input(placeholder='output for "done", JSON (optional)', id="output", compact=True)
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Retry (t)", id="retry", variant="primary", compact=True)
                yield Button("Done (d)", id="done", variant="success", compact=True)
                yield Button("Fail (f)", id="fail", variant="error", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed, "#retry, #done, #fail")
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose(str(event.button.id))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_choose(self, action: str) -> None:
        reason = self.query_one("#reason", Input).value.strip() or None
        raw = self.query_one("#output", Input).value.strip()
        output: Any = None
        if action == "done" and raw:
            try:
                output = json.loads(raw)
            except json.JSONDecodeError as exc:
                self.query_one("#error", Label).update(f"Output is not valid JSON: {exc.msg}")
                return
        self.dismiss(ResolveChoice(action, output, reason))
