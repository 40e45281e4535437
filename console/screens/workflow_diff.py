"""`d` on the Workflows screen: the unified diff of two versions of a workflow's YAML source.

It opens on the version before the active one against the active one; `[` and `]` step to the
older and newer pair of consecutive versions. Lines keep their `+`/`-` prefix, so the diff reads
the same with colours off (NO_COLOR).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer, Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from console.formatting import describe_error, is_connection_error, short_id
from console.workflow_text import diff_line_style
from worker.errors import WorkerError
from worker.models import WorkflowVersion

if TYPE_CHECKING:
    from console.app import AgentConsole


def diff_text(diff: str) -> Text:
    """A unified diff as Text, one style per line (+ green, - red, @@ cyan); never wrapped."""
    out = Text(no_wrap=True, overflow="ignore")
    if not diff:
        out.append("The two versions have the same YAML source.", style="dim")
        return out
    for line in diff.splitlines():
        out.append(line + "\n", style=diff_line_style(line))
    out.rstrip()
    return out


def default_pair(versions: list[WorkflowVersion]) -> int | None:
    """Index (in `versions`, newest first) of the newer version of the default pair: the active one
    against the one before it, else the newest two. None when there is nothing to compare."""
    if len(versions) < 2:
        return None
    active = next((i for i, v in enumerate(versions) if v.active), 0)
    return min(active, len(versions) - 2)


class WorkflowDiffScreen(ModalScreen[None]):
    """Keys: `[` older pair · `]` newer pair · j/k/arrows scroll · esc close."""

    CSS_PATH = "workflow_diff.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "older", "Older pair"),
        Binding("right_square_bracket", "newer", "Newer pair"),
        Binding("j", "scroll_diff('down')", "Down", show=False),
        Binding("k", "scroll_diff('up')", "Up", show=False),
        Binding("g", "scroll_diff('home')", "Top", show=False),
        Binding("G", "scroll_diff('end')", "Bottom", show=False),
        Binding("escape,q", "close", "Close"),
    ]

    def __init__(self, name: str, versions: list[WorkflowVersion], *, pair: tuple[str, str] | None = None,
                 labels: tuple[str, str] = ("", "")) -> None:
        super().__init__()
        self.workflow = name
        self.versions = [] if pair else versions
        """Newest first; empty when unknown (the runtime's default pair is shown, without stepping)."""
        self.index = default_pair(self.versions)
        """The newer version of the pair shown is versions[index], the older one versions[index + 1]."""
        self.fixed = pair
        """(old hash, new hash): just this pair, no stepping (a run's version against the current one)."""
        self.labels = labels
        """What the fixed pair's two versions are, e.g. ("run's", "current")."""
        self.diff: str | None = None

    @property
    def console_app(self) -> AgentConsole:
        return cast("AgentConsole", self.app)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self._title(), id="title")
            with ScrollableContainer(id="diff-scroll"):
                yield Static("Loading the diff…", id="diff")
            yield Label(self._hint(), id="hint")

    def on_mount(self) -> None:
        self.query_one("#diff-scroll").focus()
        self.load_diff()

    # -- the pair ----------------------------------------------------------------------------
    def _pair(self) -> tuple[WorkflowVersion, WorkflowVersion] | None:
        if self.index is None:
            return None
        return self.versions[self.index + 1], self.versions[self.index]

    @staticmethod
    def _label(v: WorkflowVersion) -> str:
        return short_id(v.def_hash) + (" (active)" if v.active else "")

    def _title(self) -> str:
        if self.fixed is not None:
            (old_hash, new_hash), (old_label, new_label) = self.fixed, self.labels
            return (f"Diff {self.workflow}: {short_id(old_hash)}{f' ({old_label})' if old_label else ''} → "
                    f"{short_id(new_hash)}{f' ({new_label})' if new_label else ''}")
        if self.index is None:
            return f"Diff {self.workflow}: previous → active version"
        old, new = self.versions[self.index + 1], self.versions[self.index]
        n = len(self.versions)
        return (f"Diff {self.workflow}: {self._label(old)} → {self._label(new)}"
                f"  [{n - self.index - 1}→{n - self.index} of {n}]")

    def _hint(self) -> str:
        if self.index is None:
            return "esc close · ←→↑↓ scroll"
        return "[ older · ] newer · ←→↑↓ j k scroll · esc close"

    @work(group="diff", exclusive=True, exit_on_error=False)
    async def load_diff(self) -> None:
        pair = self._pair()
        body = self.query_one("#diff", Static)
        try:
            if self.fixed is not None:
                diff = await self.console_app.client.workflow_diff(self.workflow, *self.fixed)
            elif pair is None:
                diff = await self.console_app.client.workflow_diff(self.workflow)
            else:
                diff = await self.console_app.client.workflow_diff(self.workflow, pair[0].def_hash,
                                                                   pair[1].def_hash)
        except asyncio.CancelledError:
            raise
        except WorkerError as exc:  # NotFound, PermissionDenied: said here, in place of the diff
            body.update(Text(str(exc), style="bold red"))
            return
        except Exception as exc:  # noqa: BLE001 - unreachable runtime: banner, and a line here
            if is_connection_error(exc):
                self.console_app.report_error(exc)
            body.update(Text(f"Failed: {describe_error(exc, 200)}", style="bold red"))
            return
        self.diff = diff
        body.update(diff_text(diff))
        self.query_one("#diff-scroll", ScrollableContainer).scroll_home(animate=False)

    def _step(self, delta: int) -> None:
        if self.index is None:
            return
        index = self.index + delta
        if not 0 <= index <= len(self.versions) - 2:
            self.notify("No older pair of versions." if delta > 0 else "No newer pair of versions.",
                        timeout=3)
            return
        self.index = index
        self.query_one("#title", Label).update(self._title())
        self.query_one("#diff", Static).update(Text("Loading the diff…", style="dim"))
        self.load_diff()

    def action_older(self) -> None:
        self._step(+1)

    def action_newer(self) -> None:
        self._step(-1)

    def action_scroll_diff(self, where: str) -> None:
        scroll = self.query_one("#diff-scroll", ScrollableContainer)
        {"down": scroll.scroll_down, "up": scroll.scroll_up, "home": scroll.scroll_home,
         "end": scroll.scroll_end}[where](animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
