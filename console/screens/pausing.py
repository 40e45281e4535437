"""`p`: pause or resume runs (Runs screen) and whole workflows (Workflows screen).

A paused run starts no further step (the step in flight finishes first) and holds no worker until it is
resumed; a paused workflow holds each of its unfinished runs, and every run started while it is paused is
created and waits. Pausing needs a reason (it is audited with it); resuming asks for a confirmation. The client
checks the policy file (the `cancel` permission) and writes the audit records; conflicts (already paused, not
paused, finished meanwhile) come back per run and are shown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from console.formatting import describe_error, pause_text, short_id, truncate
from console.screens.confirm import ConfirmDialog, ReasonPrompt
from console.screens.run_rows import run_lines
from worker.client.pauses import PauseOutcome, WorkflowPause
from worker.errors import Conflict, WorkerError
from worker.models import RunSummary

if TYPE_CHECKING:
    from console.screens.base import ConsoleScreen

SETTLE = 1.0
"""Seconds a pause waits for each run it reached to park before it returns; those still finishing a step are
reported, and their rows turn from `pausing` to `paused` live when they park."""


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


@dataclass
class PauseTargets:
    """What `p` does to the selected or marked runs."""

    mode: Literal["pause", "resume"]
    runs: list[RunSummary]
    notes: list[str] = field(default_factory=list)
    """Why the other targets are left out."""


def pause_targets(targets: list[RunSummary]) -> PauseTargets:
    """Resume when every unfinished target is paused, else pause the ones that are not. Finished runs are left
    out, and so are runs paused with their workflow when resuming (the workflow is resumed as a whole)."""
    unfinished = [r for r in targets if not r.status.terminal]
    notes = [f"{len(targets) - len(unfinished)} already finished, skipped"] if len(unfinished) < len(targets) else []
    if unfinished and all(r.paused is not None for r in unfinished):
        own = [r for r in unfinished if r.paused is not None and r.paused.scope == "run"]
        held = sorted({r.workflow for r in unfinished if r.paused is not None and r.paused.scope == "workflow"})
        if held:
            notes.append(f"{len(unfinished) - len(own)} paused with their workflow ({', '.join(held)}): "
                         "resume the workflow on the Workflows screen (3, then p)")
        return PauseTargets("resume", own, notes)
    free = [r for r in unfinished if r.paused is None]
    if len(free) < len(unfinished):
        notes.append(f"{len(unfinished) - len(free)} already paused, skipped")
    return PauseTargets("pause", free, notes)


async def pause_runs_flow(screen: ConsoleScreen, targets: list[RunSummary]) -> bool:
    """Ask, pause or resume each run, notify the outcome. True when something was sent."""
    app = screen.console_app
    if not targets:
        screen.notify("No run selected.", severity="warning")
        return False
    plan = pause_targets(targets)
    if not plan.runs:
        why = "; ".join(plan.notes) or "nothing to do"
        screen.notify(f"Nothing to {plan.mode}: {why}.", severity="warning", timeout=8)
        return False
    n = len(plan.runs)
    lines = run_lines(plan.runs, app.now()) + [f"({note})" for note in plan.notes]
    call: Callable[[str], Awaitable[PauseOutcome]]
    reason: str | None = None
    if plan.mode == "pause":
        they = ("It starts", "holds") if n == 1 else ("They start", "hold")
        lines.append(f"\n{they[0]} no further step (a step in flight finishes first) and {they[1]} no worker until "
                     "resumed with p. Audited with the reason.")
        reason = await app.push_screen_wait(ReasonPrompt(f"Pause {_runs(n)}: why?", "\n".join(lines)))
        if reason is None:
            return False

        def call(run_id: str) -> Awaitable[PauseOutcome]:
            return app.client.pause_run(run_id, reason=reason, settle=SETTLE)
    else:
        lines.append("\nEach goes on from where it stopped.")
        ok = await app.push_screen_wait(ConfirmDialog(f"Resume {_runs(n)}?", "\n".join(lines),
                                                      confirm_label=f"Yes, resume {n}", cancel_label="Keep paused"))
        if not ok:
            return False

        def call(run_id: str) -> Awaitable[PauseOutcome]:
            return app.client.resume_run(run_id)

    done, failed, unsettled, still = 0, [], 0, 0
    for run in plan.runs:
        try:
            outcome = await call(run.run_id)
        except WorkerError as exc:  # Conflict (changed meanwhile), NotFound, PermissionDenied
            failed.append(f"{short_id(run.run_id)}: {exc}")
        except Exception as exc:  # noqa: BLE001 - unreachable database: banner, stop here
            app.report_error(exc)
            failed.append(f"{short_id(run.run_id)}: {describe_error(exc)}")
            break
        else:
            done += 1
            unsettled += len(outcome.unsettled)
            still += outcome.still_paused
    verb = "Paused" if plan.mode == "pause" else "Resumed"
    text = f"{_runs(done)} {verb.lower()}" + (f": {truncate(reason, 60)}" if reason else ".")
    if unsettled:
        text += f"\n{unsettled} still finishing the step in flight: shown as pausing until it ends."
    if still:
        text += f"\n{still} stay paused: their workflow is paused too (resume it on the Workflows screen)."
    if failed:
        screen.notify("\n".join([text, *failed[:5]]), title=f"{verb} {done} of {n}", severity="error", timeout=10)
    else:
        screen.notify(text, title=verb)
    return True


async def toggle_workflow_pause(screen: ConsoleScreen, workflow: str, pause: WorkflowPause | None) -> None:
    """Pause `workflow` (a reason is required) or, when it is paused (`pause`), resume it after a confirmation."""
    app = screen.console_app
    name = truncate(workflow, 40)
    if pause is None:
        body = (f"Every unfinished run of {workflow} stops before its next step (a step in flight finishes first), "
                "and runs started while it is paused are created and wait: nothing is dropped. p resumes it.")
        reason = await app.push_screen_wait(ReasonPrompt(f"Pause workflow {name}: why?", body))
        if reason is None:
            return
        verb = "Paused"
    else:
        body = (f"{workflow}: {pause_text(pause, app.now())}\n\nIts {_runs(pause.runs)} ({pause.parked} parked) go "
                "on from where they stopped; runs paused one by one stay paused.")
        if not await app.push_screen_wait(ConfirmDialog(f"Resume workflow {name}?", body, confirm_label="Yes, resume",
                                                        cancel_label="Keep paused")):
            return
        verb = "Resumed"
    try:
        if pause is None:
            outcome = await app.client.pause_workflow(workflow, reason=reason, settle=SETTLE)
        else:
            outcome = await app.client.resume_workflow(workflow)
    except Conflict as exc:  # someone else paused or resumed it meanwhile
        screen.notify(str(exc), title="Already changed", severity="error", timeout=10)
        return
    except WorkerError as exc:  # permission denied, an invalid reason
        screen.notify(str(exc), title=f"Not {verb.lower()}", severity="error", timeout=10)
        return
    except Exception as exc:  # noqa: BLE001 - unreachable database: banner
        app.report_error(exc)
        return
    n = len(outcome.runs)
    if pause is None:
        text = f"{workflow}: {_runs(n)} held: {truncate(reason, 60)}"
        if outcome.unsettled:
            text += f"\n{len(outcome.unsettled)} still finishing the step in flight."
    else:
        text = f"{workflow}: {_runs(n)} go on."
    screen.notify(text, title=f"{verb} workflow")
