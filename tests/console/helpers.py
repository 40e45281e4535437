"""Shared helpers for console tests: wait until the app is idle, read what is on screen."""

from __future__ import annotations

import asyncio

from textual.pilot import Pilot
from textual.widgets import Input

from console.app import AgentConsole
from console.screens.base import ConsoleScreen
from tests.console.fakes import FakeRuntimeClient, fixed_now

BUSY_GROUPS = frozenset({"reload", "counts", "logs", "replay", "health", "versions", "diff", "query"})


def make_app(client: FakeRuntimeClient | None = None, *, readonly: bool = False) -> AgentConsole:
    """The console on fixed data and a fixed clock; the safety refresh is pushed out of the way."""
    return AgentConsole(client or FakeRuntimeClient(), readonly=readonly, now=fixed_now, refresh_interval=3600)


async def settle(pilot: Pilot[None], rounds: int = 200) -> None:
    """Wait until no reload is in flight and the message queues are drained (twice in a row)."""
    app = pilot.app
    quiet = 0
    for _ in range(rounds):
        await pilot.pause()
        busy = any(w.group in BUSY_GROUPS and not w.is_finished for w in app.workers)
        busy = busy or any(s.is_loading for s in app.screen_stack if isinstance(s, ConsoleScreen))
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            break
        await asyncio.sleep(0.005)
    await pilot.pause()


def no_blink(app: AgentConsole) -> None:
    """Steady cursors, so screenshots do not depend on timing."""
    for screen in app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False


def screen_text(app: AgentConsole) -> str:
    """What the terminal shows right now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def notifications(app: AgentConsole) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]
