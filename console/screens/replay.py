"""Replay a run (optionally from a step): show the dry-run plan, edit inputs, confirm, open the new run.

The dialog asks the runtime for the plan first (`replay(..., dry_run=True)`), so what it shows is
exactly what will happen: the steps reused, the steps run again and the external calls that fire
again. Nothing is started until an explicit `y`. It returns the new run id when the user chose to
open it, else None.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.formatting import describe_error, is_connection_error, short_id, truncate
from worker.errors import PermissionDenied, WorkerError

if TYPE_CHECKING:
    from console.app import AgentConsole


def plan_text(plan: Any, width: int = 70) -> Text:
    """The dry-run plan as text: reused, run again, external calls (×N for a foreach), notes."""  # noqa: RUF002
    out = Text()
    reused, rerun = list(plan.reused), list(plan.rerun)
    out.append(f"Reused ({len(reused)}): ", style="bold")
    out.append((", ".join(reused) or "nothing") + "\n", style="green" if reused else "dim")
    out.append(f"Runs again ({len(rerun)}): ", style="bold")
    out.append((", ".join(rerun) or "nothing") + "\n", style="yellow" if rerun else "dim")
    calls = list(plan.external_calls)
    out.append(f"External calls that fire again ({len(calls)}):\n", style="bold")
    if not calls:
        out.append("  none\n", style="dim")
    for call in calls:
        count = f" ×{call.items}" if call.items else ""  # noqa: RUF001 - the multiplication sign is meant
        line = f"  ! {call.step_id:<12} {call.kind:<6} "
        out.append(line, style="bold red")
        out.append(truncate(str(call.detail), max(10, width - len(line) - len(count))))
        out.append(count + "\n", style="bold red")
    for note in plan.notes or ():
        out.append(f"note: {note}\n", style="italic")
    out.rstrip()
    return out


def parse_inputs(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """The inputs editor's text as a dict, or the reason it is not one."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"Inputs are not valid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(value, dict):
        return None, "Inputs must be a JSON object, like {\"key\": \"value\"}."
    return value, None


class ReplayDialog(ModalScreen[str | None]):
    """`R` on a run or a step. Keys: y replay · i edit inputs · n/esc close · o open the new run."""

    CSS_PATH = "replay.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Replay"),
        Binding("i", "edit_inputs", "Edit inputs"),
        Binding("o", "open_new", "Open new run", show=False),
        Binding("n,escape", "close", "Close"),
    ]

    def __init__(self, run_id: str, workflow: str = "", from_step: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.workflow = workflow
        self.from_step = from_step
        self.plan: Any = None
        self.planned_inputs: dict[str, Any] | None = None
        """The inputs the shown plan was made with (None: the source run's own)."""
        self.new_run_id: str | None = None
        self.busy = False

    @property
    def console_app(self) -> AgentConsole:
        return cast("AgentConsole", self.app)

    def compose(self) -> ComposeResult:
        where = f" from step {self.from_step}" if self.from_step else ""
        with Vertical(id="dialog"):
            yield Label(f"Replay run {short_id(self.run_id)} {self.workflow}{where}", id="title")
            with VerticalScroll(id="plan-scroll"):
                yield Static("Planning (dry run)…", id="plan")
            yield Label("Inputs (JSON) · i edit · enter re-plan", id="inputs-label")
            yield Input(placeholder="inputs, a JSON object", id="inputs", compact=True, disabled=True)
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Replay (y)", id="yes", variant="warning", compact=True, disabled=True)
                yield Button("Close (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()
        self.load_plan(None)

    # -- the plan ----------------------------------------------------------------------------
    def _error(self, text: str) -> None:
        self.query_one("#error", Label).update(text)

    @work(group="replay", exclusive=True, exit_on_error=False)
    async def load_plan(self, inputs: dict[str, Any] | None) -> None:
        self.busy = True
        try:
            plan, _ = await self.console_app.client.replay(self.run_id, from_step=self.from_step, inputs=inputs,
                                                           dry_run=True)
        except asyncio.CancelledError:
            raise
        except PermissionDenied as exc:
            self._refused(exc)
            return
        except WorkerError as exc:
            self._error(f"Cannot replay: {exc}")
            if self.plan is not None:  # a bad edit: the last good plan stays, the replay stays possible
                self.query_one("#yes", Button).disabled = False
            return
        except Exception as exc:  # noqa: BLE001 - unreachable runtime: banner and a line here
            self._failed(exc)
            return
        finally:
            self.busy = False
        self.plan = plan
        self.planned_inputs = inputs
        self._error("")
        self.query_one("#plan", Static).update(plan_text(plan, max(30, self.query_one("#plan").size.width or 64)))
        box = self.query_one("#inputs", Input)
        box.disabled = False
        if inputs is None:
            box.value = json.dumps(plan.inputs, separators=(", ", ": "), ensure_ascii=False)
            box.cursor_position = 0
        self.query_one("#yes", Button).disabled = False

    def _refused(self, exc: PermissionDenied) -> None:
        self.query_one("#plan", Static).update(Text(f"Permission denied: {exc}", style="bold red"))
        self.query_one("#yes", Button).disabled = True
        self.notify(str(exc), title="Permission denied", severity="error", timeout=10)

    def _failed(self, exc: Exception) -> None:
        if is_connection_error(exc):
            self.console_app.report_error(exc)
        self._error(f"Failed: {describe_error(exc, 200)}")

    def _edited_inputs(self) -> tuple[dict[str, Any] | None, bool]:
        """(inputs to send, valid): None means "the source run's inputs, unchanged"."""
        box = self.query_one("#inputs", Input)
        if self.plan is None:
            return None, True
        value, error = parse_inputs(box.value)
        if error is not None:
            self._error(error)
            return None, False
        if value == dict(self.plan.inputs) and self.planned_inputs is None:
            return None, True
        return value, True

    def action_edit_inputs(self) -> None:
        box = self.query_one("#inputs", Input)
        if not box.disabled and self.new_run_id is None:
            box.focus()

    @on(Input.Submitted, "#inputs")
    def _inputs_submitted(self) -> None:
        """Enter in the editor: validate, then plan again with these inputs (the runtime checks them)."""
        inputs, ok = self._edited_inputs()
        if not ok:
            return
        self._error("")
        self.query_one("#no", Button).focus()
        self.load_plan(inputs)

    # -- confirm -----------------------------------------------------------------------------
    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.action_confirm()

    def action_confirm(self) -> None:
        if self.new_run_id is not None:
            self.action_open_new()
            return
        if self.plan is None or self.busy or self.query_one("#yes", Button).disabled:
            return
        inputs, ok = self._edited_inputs()
        if ok:
            self.start_replay(inputs)

    @work(group="replay", exclusive=True, exit_on_error=False)
    async def start_replay(self, inputs: dict[str, Any] | None) -> None:
        self.busy = True
        self.query_one("#yes", Button).disabled = True
        try:
            _plan, new_id = await self.console_app.client.replay(self.run_id, from_step=self.from_step,
                                                                 inputs=inputs)
        except asyncio.CancelledError:
            raise
        except PermissionDenied as exc:
            self._refused(exc)
            return
        except WorkerError as exc:
            self._error(f"Not replayed: {exc}")
            self.query_one("#yes", Button).disabled = False
            return
        except Exception as exc:  # noqa: BLE001 - banner
            self._failed(exc)
            self.query_one("#yes", Button).disabled = False
            return
        finally:
            self.busy = False
        self.new_run_id = str(new_id)
        self.query_one("#inputs", Input).disabled = True
        self.query_one("#plan", Static).update(Text.assemble(
            ("Replay started: ", "bold green"), (f"run {self.new_run_id}", "bold"),
            "\n\nPress o to open it, n to close."))
        yes = self.query_one("#yes", Button)
        yes.label = "Open (o)"
        yes.variant = "primary"
        yes.disabled = False
        yes.focus()
        self.notify(f"Replay of {short_id(self.run_id)} started as run {short_id(self.new_run_id)}.",
                    title="Replayed")

    def action_open_new(self) -> None:
        if self.new_run_id is not None:
            self.dismiss(self.new_run_id)

    @on(Button.Pressed, "#no")
    def action_close(self) -> None:
        self.dismiss(None)
