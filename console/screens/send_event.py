"""`E`: send the event a waiting run waits for, from the keyboard.

The dialog is prefilled with the event name and key of the run's `wait` step (`client.open_waits`); the
user types the event's data (a JSON object, checked here), then confirms, and `client.send_event` delivers
it: to every run waiting for that name and key, and to the workflows subscribed to the name. The client
writes the audit record (an event sent from the terminal). On a run that waits for no event, a notification
says so and no dialog opens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.formatting import (
    compact_json,
    format_left,
    format_timestamp,
    item_suffix,
    short_id,
    truncate,
)
from console.screens.confirm import ConfirmDialog
from worker.client.events import EventDelivery, EventWait
from worker.errors import WorkerError
from worker.models import RunStatus, RunSummary

if TYPE_CHECKING:
    from console.screens.base import ConsoleScreen


@dataclass(frozen=True, slots=True)
class EventToSend:
    name: str
    key: str | None
    data: dict[str, Any]


def parse_event_data(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """The data field as a dict (blank: `{}`), or the reason it is not a JSON object."""
    if not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"Data is not valid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(value, dict):
        return None, 'Data must be a JSON object, like {"text": "thanks"}.'
    return value, None


def wait_line(wait: EventWait, now: Any) -> str:
    """`step hold waits for customer.replied key T-42 · deadline 2025-03-16 15:00:00Z (2d3h left)`."""
    key = "any key" if wait.key is None else f"key {wait.key}"
    text = f"step {wait.step_id}{item_suffix(wait.item)} waits for {wait.name} {key}"
    if wait.deadline is not None:
        text += f" · deadline {format_timestamp(wait.deadline)} ({format_left(wait.deadline, now)})"
    return text


class SendEventDialog(ModalScreen[EventToSend | None]):
    """Name, key and data of the event to send; `enter` checks them and returns them, `esc` cancels."""

    CSS_PATH = "send_event.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run: RunSummary, waits: list[EventWait], now: Any) -> None:
        super().__init__()
        self.run = run
        self.waits = waits
        self.now = now

    def compose(self) -> ComposeResult:
        wait = self.waits[0]
        body = Text(wait_line(wait, self.now) + "\n")
        for other in self.waits[1:3]:
            body.append(f"and {wait_line(other, self.now)}\n", style="dim")
        body.append("It resumes every run waiting for this name and key, and starts the workflows subscribed to "
                    "the name. Recorded in the audit trail.", style="dim")
        with Vertical(id="dialog"):
            yield Label(f"Send an event to run {short_id(self.run.run_id)} {truncate(self.run.workflow, 30)}",
                        id="title")
            yield Static(body, id="body")
            with Horizontal(classes="field"):
                yield Label("name", classes="field-label")
                yield Input(wait.name, placeholder="event name", id="event-name", compact=True)
            with Horizontal(classes="field"):
                yield Label("key", classes="field-label")
                yield Input(wait.key or "", placeholder="key (blank: none)", id="event-key", compact=True)
            with Horizontal(classes="field"):
                yield Label("data", classes="field-label")
                yield Input("{}", placeholder='a JSON object, e.g. {"text": "thanks"}', id="event-data",
                            compact=True, select_on_focus=False)
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Send… (enter)", id="send", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        box = self.query_one("#event-data", Input)
        box.focus()
        box.cursor_position = 1  # inside the braces

    def _error(self, text: str) -> None:
        self.query_one("#error", Label).update(text)

    @on(Input.Submitted)
    @on(Button.Pressed, "#send")
    def _submit(self) -> None:
        name = self.query_one("#event-name", Input).value.strip()
        key = self.query_one("#event-key", Input).value.strip()
        if not name:
            self._error("An event name is required.")
            self.query_one("#event-name", Input).focus()
            return
        data, error = parse_event_data(self.query_one("#event-data", Input).value)
        if error is not None or data is None:
            self._error(error or "")
            self.query_one("#event-data", Input).focus()
            return
        self.dismiss(EventToSend(name, key or None, data))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def delivery_text(delivery: EventDelivery, run: RunSummary) -> tuple[str, bool]:
    """The notification after sending: how many runs it resumed and started, and whether it reached `run`."""
    resumed, started = len(delivery.delivered_to), len(delivery.started)
    parts = [f"Resumed {resumed} waiting run{'s' if resumed != 1 else ''}",
             f"started {started} run{'s' if started != 1 else ''}"]
    text = ", ".join(parts) + "."
    for refused in delivery.refused[:3]:
        text += f"\nNot started: {refused.get('workflow')}: {truncate(refused.get('reason'), 80)}"
    reached = run.run_id in delivery.delivered_to
    if not reached:
        text += f"\nRun {short_id(run.run_id)} was not resumed: it waits for another name or key."
    if delivery.replayed:
        text += "\n(The same event was sent before: nothing new happened.)"
    return text, reached


async def send_event_flow(screen: ConsoleScreen, run: RunSummary) -> None:
    """Ask (dialog, then confirmation), send, and say what the event did."""
    app = screen.console_app
    label = f"Run {short_id(run.run_id)}"
    if run.status is not RunStatus.WAITING:
        screen.notify(f"{label} is not waiting for an event (it is {run.status.value}).",
                      title="No event to send", severity="warning")
        return
    try:
        waits = await app.client.open_waits(run_id=run.run_id)
    except WorkerError as exc:
        screen.notify(str(exc), title="Send event", severity="error", timeout=10)
        return
    except Exception as exc:  # noqa: BLE001 - unreachable database: banner
        app.report_error(exc)
        return
    if not waits:
        what = f" (it waits for {run.waiting_on})" if run.waiting_on else ""
        screen.notify(f"{label} is not waiting for an event{what}.", title="No event to send", severity="warning")
        return
    request = await app.push_screen_wait(SendEventDialog(run, list(waits), app.now()))
    if request is None:
        return
    key = "no key" if request.key is None else f"key {request.key}"
    body = (f"{request.name}  {key}\ndata {compact_json(request.data, 200) or '{}'}\n\n"
            f"for run {short_id(run.run_id)} {run.workflow}: {wait_line(waits[0], app.now())}")
    ok = await app.push_screen_wait(ConfirmDialog(f"Send event {truncate(request.name, 40)}?", body,
                                                  confirm_label="Send", cancel_label="Don't send"))
    if not ok:
        return
    try:
        delivery = await app.client.send_event(request.name, request.key, request.data)
    except WorkerError as exc:  # invalid name or key, permission denied
        screen.notify(str(exc), title="Event not sent", severity="error", timeout=10)
        return
    except Exception as exc:  # noqa: BLE001 - unreachable database: banner
        app.report_error(exc)
        return
    text, reached = delivery_text(delivery, run)
    screen.notify(text, title=f"Event {truncate(request.name, 40)} sent",
                  severity="information" if reached else "warning", timeout=10)
