"""Retry failed and cancelled runs under their own version or the current one (`R` on marked runs), and the
version block of the replay dialog.

`client.retry_options` says, per run, which version it started with, the workflow's current one, whether the
current one can take the run over from where it stopped, and the default (the current one when the file changed
and it can). The bulk dialog shows how many runs go under which version, lists the runs it skips and why
(not failed or cancelled; `current` asked for and incompatible: never half-replayed), and `v` switches between
each run's default, the current version and the runs' own. Each run then goes through `client.retry`, which
checks again and says when it skipped one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from console.formatting import describe_error, short_id, truncate
from worker.client.retries import RetryOption, VersionChoice
from worker.errors import WorkerError
from worker.models import RunSummary

if TYPE_CHECKING:
    from console.screens.base import ConsoleScreen

MODES: tuple[VersionChoice, ...] = ("auto", "current", "run")
MODE_LABELS: dict[VersionChoice, str] = {"auto": "each run's default", "current": "current", "run": "run's own"}


@dataclass(frozen=True, slots=True)
class Chosen:
    """What retrying one run under a mode comes to."""

    option: RetryOption
    version: Literal["run", "current"] | None
    """None: skipped (why says why)."""
    why: str | None = None

    @property
    def def_hash(self) -> str | None:
        """The version the new run will run under."""
        if self.version == "current" and self.option.changed:
            return self.option.current_version
        return self.option.run_version


def choose(option: RetryOption, mode: VersionChoice) -> Chosen:
    """As `RetriesApi.retry` decides: the default for `auto`; `current` skips a run it cannot take over."""
    if not option.retryable:
        return Chosen(option, None, option.problem)
    version: Literal["run", "current"] = option.default if mode == "auto" else mode
    if version == "current" and option.changed and not option.compatible:
        return Chosen(option, None, option.problem or "the current version cannot take it over")
    return Chosen(option, version)


def version_word(chosen: Chosen) -> str:
    """`current`, `own`, or `own, current` (the file has not changed since the run started)."""
    if chosen.version == "current" and chosen.option.changed:
        return "current"
    return "own" if chosen.option.changed else "own, current"


def groups(chosen: list[Chosen]) -> list[tuple[str, str, str, int]]:
    """(version word, workflow, hash, how many runs) for the runs that will be retried, current ones first."""
    counts = Counter((version_word(c), c.option.workflow, short_id(c.def_hash)) for c in chosen if c.version)
    order = sorted(counts.items(), key=lambda kv: (kv[0][0] != "current", kv[0][1], kv[0][0], kv[0][2]))
    return [(word, wf, h, n) for (word, wf, h), n in order]


def count_line(chosen: list[Chosen]) -> str:
    """`2 under the current version, 1 under its own version, 1 skipped`."""
    words = Counter("current" if version_word(c) == "current" else "own" for c in chosen if c.version)
    parts = []
    if words["current"]:
        parts.append(f"{words['current']} under the current version")
    if words["own"]:
        parts.append(f"{words['own']} under {'its own version' if words['own'] == 1 else 'their own versions'}")
    skipped = sum(1 for c in chosen if c.version is None)
    if skipped:
        parts.append(f"{skipped} skipped")
    return ", ".join(parts) or "nothing"


def version_block(option: RetryOption | None, choice: Literal["run", "current"], problem: str | None,
                  checked: bool, width: int) -> Text:
    """The replay dialog's version lines: which version each choice means (short hashes), which is chosen
    (and which is the default), and what the compatibility check found about the current one (`checked`: it
    was made; `problem`: why the current version cannot take the run over)."""
    out = Text()
    if option is None:
        return out
    own = f"run's own {short_id(option.run_version)}"
    out.append("Version  ", style="bold")
    if not option.changed:
        if option.current_version is None:
            out.append(f"{own} (the workflow has no valid current version)", style="yellow")
        else:
            out.append(f"{own}, the current one (the file has not changed since the run started)", style="dim")
        return out
    default = option.default if option.retryable else "run"
    for name, label in (("current", f"current {short_id(option.current_version)}"), ("run", own)):
        chosen = choice == name
        out.append("● " if chosen else "○ ", style="bold" if chosen else "dim")
        out.append(label, style="bold" if chosen else "")
        out.append(" (default)  " if name == default else "  ", style="dim")
    out.rstrip()
    out.append("\n")
    if not checked:
        out.append("         the current version is checked when chosen (v)", style="dim")
    elif problem:
        out.append("         ✗ ", style="bold red")
        out.append(truncate(problem, max(20, width * 2 - 12)), style="red")
    else:
        out.append("         ✓ the current version can take this run over", style="green")
    return out


class BulkRetryDialog(ModalScreen[VersionChoice | None]):
    """Retry the marked runs: counts per version, the runs skipped and why. Keys: v version · y retry · n close."""

    CSS_PATH = "retry.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "cycle_version", "Version"),
        Binding("y", "confirm", "Retry"),
        Binding("n,escape", "cancel", "Close"),
    ]

    def __init__(self, options: list[RetryOption], not_listed: int = 0) -> None:
        super().__init__()
        self.options = options
        self.mode: VersionChoice = "auto"
        self.not_listed = not_listed

    def chosen(self) -> list[Chosen]:
        return [choose(o, self.mode) for o in self.options]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("", id="title")
            yield Static("", id="modes")
            with VerticalScroll(id="body-scroll"):
                yield Static("", id="body")
            with Horizontal(id="buttons"):
                yield Button("Retry (y)", id="yes", variant="error", compact=True)
                yield Button("Keep (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()
        self._show()

    def _show(self) -> None:
        chosen = self.chosen()
        n = sum(1 for c in chosen if c.version)
        self.query_one("#title", Label).update(f"Retry {n} run{'s' if n != 1 else ''}?")
        modes = Text("version  ", style="bold")
        for mode in MODES:
            on_ = mode == self.mode
            modes.append(("● " if on_ else "○ ") + MODE_LABELS[mode] + "  ", style="bold" if on_ else "dim")
        modes.append("v switch", style="dim")
        self.query_one("#modes", Static).update(modes)
        body = Text(count_line(chosen) + "\n", style="bold")
        for word, workflow, h, count in groups(chosen):
            body.append(f"{count:>3} × {truncate(workflow, 20):<20} ")  # noqa: RUF001 - a multiplication sign
            body.append(f"{word.split(',')[0]:<8}", style="green" if word == "current" else "")
            body.append(h, style="bold")
            body.append(" (unchanged: the current one)\n" if word == "own, current" else "\n", style="dim")
        skipped = [c for c in chosen if c.version is None]
        if skipped:
            body.append(f"Skipped ({len(skipped)}), never half-replayed:\n", style="bold yellow")
            for c in skipped[:6]:
                body.append(f"  {short_id(c.option.run_id)} {truncate(c.option.workflow, 16)}: ", style="yellow")
                body.append(f"{truncate(c.why, 240)}\n")
            if len(skipped) > 6:
                body.append(f"  … and {len(skipped) - 6} more\n", style="dim")
        if self.not_listed:
            body.append(f"({self.not_listed} no longer found, skipped)\n", style="dim")
        body.append("Each becomes a new run that reuses the completed steps and runs again from the one that "
                    "failed.", style="dim")
        self.query_one("#body", Static).update(body)
        yes = self.query_one("#yes", Button)
        yes.label = f"Yes, retry {n} (y)"
        yes.disabled = n == 0

    def action_cycle_version(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self._show()

    @on(Button.Pressed, "#yes")
    def action_confirm(self) -> None:
        if not self.query_one("#yes", Button).disabled:
            self.dismiss(self.mode)

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)


async def bulk_retry_flow(screen: ConsoleScreen, targets: list[RunSummary]) -> bool:
    """`R` on marked runs: options, the dialog, then `retry` each run it does not skip. True when sent."""
    app = screen.console_app
    try:
        options = await app.client.retry_options([r.run_id for r in targets])
    except WorkerError as exc:
        screen.notify(str(exc), title="Retry", severity="error", timeout=10)
        return False
    except Exception as exc:  # noqa: BLE001 - unreachable database: banner
        app.report_error(exc)
        return False
    if not any(o.retryable for o in options):
        screen.notify("Nothing to retry: only failed or cancelled runs can be retried.", severity="warning")
        return False
    mode = await app.push_screen_wait(BulkRetryDialog(options, len(targets) - len(options)))
    if mode is None:
        return False
    every = [choose(o, mode) for o in options]
    chosen = [c for c in every if c.version is not None]
    words: Counter[str] = Counter()
    skipped = [f"{short_id(c.option.run_id)}: {c.why}" for c in every if c.version is None]
    failed: list[str] = []
    for c in chosen:
        try:
            result = await app.client.retry(c.option.run_id, mode)
        except WorkerError as exc:  # permission denied, not found
            failed.append(f"{short_id(c.option.run_id)}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - unreachable database: banner, stop here
            app.report_error(exc)
            failed.append(f"{short_id(c.option.run_id)}: {describe_error(exc)}")
            break
        if result.new_run is None:
            skipped.append(f"{short_id(c.option.run_id)}: {result.skipped}")
        else:
            words["current" if result.version == "current" and c.option.changed else "own"] += 1
    done = sum(words.values())
    text = (f"{done} new run{'s' if done != 1 else ''}: {words['current']} under the current version, "
            f"{words['own']} under their own.")
    lines = [text, *[f"skipped {truncate(s, 100)}" for s in skipped[:3]], *failed[:5]]
    if len(skipped) > 3:
        lines.insert(4, f"… and {len(skipped) - 3} more skipped")
    severity: Literal["information", "warning", "error"] = "error" if failed else "warning" if skipped \
        else "information"
    screen.notify("\n".join(lines), title=f"Retried {done} of {len(chosen)}", severity=severity, timeout=10)
    return True
