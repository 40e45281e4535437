"""Replay a run (optionally from a step): show the dry-run plan, edit inputs, confirm, open the new run.

The dialog asks the runtime for the plan first (`replay(..., dry_run=True)`), so what it shows is
exactly what will happen: the steps reused, the steps run again and the external calls that fire
again. Nothing is started until an explicit `y`. It returns the new run id when the user chose to
open it, else None.

When the workflow's file changed since the run started, it offers the run's own version or the current one
(`v`; the default from `client.retry_options`: the current one when it can take the run over), shows both
hashes, what the compatibility check found, and the diff between them (inline; `d` full screen). A version
that cannot take the run over is refused by the dry run: nothing is started, never half-replayed.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.formatting import describe_error, is_connection_error, short_id, truncate
from console.screens.retry import version_block
from console.screens.workflow_diff import WorkflowDiffScreen, diff_text
from worker.client.retries import RetryOption
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
    """`R` on a run or a step. Keys: y replay · v run's or current version · d diff them · i edit inputs ·
    n/esc close · o open the new run."""

    CSS_PATH = "replay.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012 - declared by Textual untyped
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # noqa: RUF012 - the plan and the diff get more room
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Replay"),
        Binding("v", "toggle_version", "Version"),
        Binding("d", "diff", "Diff versions", show=False),
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
        self.option: RetryOption | None = None
        """What retrying the run can mean: its version, the current one, the default, the check's finding."""
        self.version: Literal["run", "current"] = "run"
        self.problem: str | None = None
        """Why the current version cannot take the run over (None: it can, or that is not known yet)."""
        self.checked = False
        """The current version was checked (by retry_options, or a dry run under it)."""
        self.diff: str | None = None

    @property
    def latest(self) -> bool:
        """The replay runs under the current version (it differs from the run's)."""
        return self.option is not None and self.option.changed and self.version == "current"

    @property
    def console_app(self) -> AgentConsole:
        return cast("AgentConsole", self.app)

    def compose(self) -> ComposeResult:
        where = f" from step {self.from_step}" if self.from_step else ""
        with Vertical(id="dialog"):
            yield Label(f"Replay run {short_id(self.run_id)} {self.workflow}{where}", id="title")
            yield Static("", id="versions")
            with VerticalScroll(id="plan-scroll"):
                yield Static("Planning (dry run)…", id="plan")
                yield Static("", id="diff")
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

    async def _load_option(self) -> None:
        """The run's version, the current one and the default (once, before the first plan)."""
        try:
            options = await self.console_app.client.retry_options([self.run_id])
        except WorkerError:  # not allowed, not found: the dry run says so
            options = []
        self.option = options[0] if options else None
        option = self.option
        if option is None or not option.changed:
            return
        if self.from_step is None and option.retryable:  # the check was made from where the run stopped
            self.version, self.checked = option.default, True
            self.problem = None if option.compatible else option.problem
        self.load_diff()

    @work(group="replay", exclusive=True, exit_on_error=False)
    async def load_plan(self, inputs: dict[str, Any] | None) -> None:
        self.busy = True
        try:
            if self.option is None:
                await self._load_option()
            latest = self.latest
            plan, _ = await self.console_app.client.replay(self.run_id, from_step=self.from_step, inputs=inputs,
                                                           latest=latest, dry_run=True)
        except asyncio.CancelledError:
            raise
        except PermissionDenied as exc:
            self._refused(exc)
            return
        except WorkerError as exc:
            if latest and inputs is None:  # the current version cannot take this run over
                self._incompatible(str(exc))
                return
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
        if latest:
            self.problem, self.checked = None, True
        self._render_versions()
        self._error("")
        self.query_one("#plan", Static).update(plan_text(plan, max(30, self.query_one("#plan").size.width or 64)))
        box = self.query_one("#inputs", Input)
        box.disabled = False
        if inputs is None:
            box.value = json.dumps(plan.inputs, separators=(", ", ": "), ensure_ascii=False)
            box.cursor_position = 0
        self.query_one("#yes", Button).disabled = False

    def _incompatible(self, problem: str) -> None:
        self.problem, self.checked, self.plan = problem, True, None
        self._render_versions()
        self.query_one("#plan", Static).update(Text.assemble(
            ("Not under the current version: ", "bold red"), problem,
            ("\n\nv: replay it under its own version instead.", "dim")))
        self.query_one("#yes", Button).disabled = True

    def _render_versions(self) -> None:
        block = self.query_one("#versions", Static)
        text = version_block(self.option, self.version, self.problem if self.checked else None, self.checked,
                             block.size.width or 72)
        block.update(text)
        block.set_class(bool(text), "-shown")
        versions = " · v version · d diff" if self.option is not None and self.option.changed else ""
        self.query_one("#inputs-label", Label).update(f"Inputs (JSON) · i edit · enter re-plan{versions}")

    @work(group="replay-diff", exclusive=True, exit_on_error=False)
    async def load_diff(self) -> None:
        """The diff from the run's version to the current one, under the plan."""
        option = self.option
        if option is None or option.current_version is None:
            return
        try:
            diff = await self.console_app.client.workflow_diff(option.workflow, option.run_version,
                                                               option.current_version)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a line in place of the diff (a banner for an outage)
            if is_connection_error(exc):
                self.console_app.report_error(exc)
            self.query_one("#diff", Static).update(Text(f"No diff: {describe_error(exc, 200)}", style="dim"))
            return
        self.diff = diff
        head = Text(f"\nChanges {short_id(option.run_version)} (the run's) → {short_id(option.current_version)} "
                    "(current) · d full screen\n", style="bold")
        self.query_one("#diff", Static).update(Text.assemble(head, diff_text(diff)))

    def action_toggle_version(self) -> None:
        option = self.option
        if self.new_run_id is not None or self.busy or option is None:
            return
        if not option.changed:
            self.notify("The file has not changed since this run started: there is only its own version.",
                        timeout=5)
            return
        self.version = "run" if self.version == "current" else "current"
        self.query_one("#yes", Button).disabled = True
        self._render_versions()
        self.query_one("#plan", Static).update(Text("Planning (dry run)…", style="dim"))
        self.load_plan(self.planned_inputs)

    def action_diff(self) -> None:
        option = self.option
        if option is None or not option.changed or option.current_version is None:
            self.notify("The run's version is the current one: no diff.", timeout=5)
            return
        self.app.push_screen(WorkflowDiffScreen(option.workflow, [], pair=(option.run_version, option.current_version),
                                                labels=("the run's", "current")))

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
                                                                 inputs=inputs, latest=self.latest)
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
        under = f" under the current version {short_id(_plan.def_hash)}" if self.latest else ""
        self.query_one("#plan", Static).update(Text.assemble(
            ("Replay started: ", "bold green"), (f"run {self.new_run_id}", "bold"), under,
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
