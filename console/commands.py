"""Command palette (ctrl+p): jump to a screen, or to a run by id, id prefix or workflow name."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from console.formatting import short_id, status_label
from console.widgets.navbar import SCREENS

if TYPE_CHECKING:
    from console.app import AgentConsole

_ID_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")


class ConsoleCommands(Provider):
    @property
    def console_app(self) -> AgentConsole:
        return cast("AgentConsole", self.app)

    async def discover(self) -> Hits:
        for mode, key, label in SCREENS:
            yield DiscoveryHit(f"Go to {label}", partial(self.app.switch_mode, mode), help=f"screen {key}")

    async def search(self, query: str) -> Hits:
        app = self.console_app
        matcher = self.matcher(query)
        for mode, key, label in SCREENS:
            text = f"Go to {label}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(app.switch_mode, mode), help=f"screen {key}")
        needle = query.strip().lower()
        exact = False
        for run in app.last_runs[:300]:
            text = f"Open run {short_id(run.run_id)} {run.workflow}"
            if needle and run.run_id.startswith(needle):
                exact = True
                score = 1.0
            else:
                score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(app.open_run, run.run_id),
                          help=f"{status_label(run.status, waiting_on=run.waiting_on)} · {run.run_id}")
        if not exact and _ID_PREFIX.match(needle):
            # not among the recent runs: let the runtime resolve the id (or prefix)
            yield Hit(0.5, f"Open run {needle}", partial(app.open_run, needle), help="look up this run id")
