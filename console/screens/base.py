"""What every console screen shares: nav bar, connection banner, footer, throttled reloads, readonly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget

from console.messages import RefreshAll
from console.throttle import Coalescer
from console.widgets.footer import KeyFooter
from console.widgets.navbar import ConnectionBanner, NavBar
from worker.models import RunSummary

if TYPE_CHECKING:
    from console.app import AgentConsole

logger = logging.getLogger(__name__)

# Actions that change the runtime: hidden and refused in --readonly.
GUARDED_ACTIONS = frozenset({"cancel", "approve", "reject", "resolve", "replay", "send_event", "toggle_pause"})

RELOAD_THROTTLE = 0.25
"""Seconds between two reloads of one screen while events keep arriving."""


def guarded(key: str, action: str, description: str, *, show: bool = True) -> list[BindingType]:
    """A binding for a mutating action, plus a hidden twin that explains the refusal in --readonly."""
    return [
        Binding(key, action, description, show=show),
        Binding(key, f"refuse('{description.lower()}')", description, show=False),
    ]


class ConsoleScreen(Screen[None]):
    """A console screen. Subclasses implement `compose_body` and `reload`.

    Reloads are throttled: a burst of events during a reload causes exactly one more reload. A
    screen that is not visible only remembers that it is stale and reloads when it is shown again.
    """

    MODE: ClassVar[str] = "runs"
    USES_CLIENT: ClassVar[bool] = True
    """A successful reload proves the runtime is reachable (clears the banner)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.loaded = False
        """At least one reload succeeded."""
        self._stale = False
        self._reloader = Coalescer(self, self._reload_once, group="reload", pause=RELOAD_THROTTLE)

    @property
    def console_app(self) -> AgentConsole:
        return cast("AgentConsole", self.app)

    # -- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield NavBar(self.nav_mode())
        yield ConnectionBanner()
        yield from self.compose_body()
        yield KeyFooter(compact=True)

    def compose_body(self) -> Iterable[Widget]:
        return ()

    def nav_mode(self) -> str:
        """The nav-bar tab to highlight."""
        return self.MODE

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        """Fetch through the client and render. Runs in a worker, never on a timer loop."""

    @property
    def is_loading(self) -> bool:
        return self._reloader.running

    def _visible(self) -> bool:
        try:
            stack = self.app.screen_stack
        except Exception:  # noqa: BLE001 - not mounted in a stack (yet, or any more)
            return False
        for screen in reversed(stack):
            if not screen.is_modal:
                return screen is self
        return False

    def request_reload(self) -> None:
        """Reload now if visible (coalesced with reloads in flight), else when shown again."""
        if not self.is_attached:
            return
        if not self._visible():
            self._stale = True
            return
        self._stale = False
        self._reloader.request()

    async def _reload_once(self) -> None:
        try:
            await self.reload()
        except asyncio.CancelledError:
            raise
        except NoMatches:
            logger.debug("reload finished after the screen's widgets were removed (closing)")
        except Exception as exc:  # noqa: BLE001 - shown as banner or notification, never fatal
            self.console_app.report_error(exc)
        else:
            self.loaded = True
            if self.USES_CLIENT:
                self.console_app.report_ok()

    def on_mount(self) -> None:
        self.console_app.subscribe(self)
        self.request_reload()

    def on_unmount(self) -> None:
        self.console_app.unsubscribe(self)

    def on_screen_resume(self) -> None:
        if self._stale or (not self.loaded and not self.is_loading):
            self.request_reload()

    def on_refresh_all(self, _message: RefreshAll) -> None:
        self.request_reload()

    # -- actions ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        readonly = self.console_app.readonly
        if action in GUARDED_ACTIONS:
            return not readonly
        if action == "refuse":
            return readonly
        return True

    def action_refuse(self, what: str) -> None:
        self.notify(f"Read-only console: {what} is disabled (started with --readonly).",
                    title="Refused", severity="warning")

    @work(group="action", exclusive=True, exit_on_error=False)
    async def replay_run(self, run_id: str, workflow: str, from_step: str | None = None) -> None:
        """The replay dialog; opens the new run when the user asks for it."""
        from console.screens.replay import ReplayDialog

        new_id = await self.app.push_screen_wait(ReplayDialog(run_id, workflow, from_step))
        self.request_reload()
        if new_id:
            self.console_app.open_run(new_id)

    @work(group="action", exclusive=True, exit_on_error=False)
    async def send_event_to(self, run: RunSummary) -> None:
        """The send-event dialog for a run waiting for an event (a notification for any other run)."""
        from console.screens.send_event import send_event_flow

        await send_event_flow(self, run)
        self.request_reload()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        elif self.MODE != "runs":
            self.app.switch_mode("runs")
