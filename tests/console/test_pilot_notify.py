"""A human task that arrives while the console is open rings the terminal bell and shows a toast (Pilot, 80x24).

The tasks come from the FakeRuntimeClient; their arrival from its live events, as a worker's commit would send.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import console.app
from console.app import AgentConsole
from tests.console.fakes import FIXED_NOW, FakeRuntimeClient, fixed_now, make_tasks, rid, tid
from tests.console.helpers import notifications, screen_text, settle
from worker.models import LiveEvent

SIZE = (80, 24)


class RingingConsole(AgentConsole):
    """The console, counting its bells (headless, Textual writes no BEL to a terminal)."""

    CSS_PATH = str(Path(console.app.__file__).with_name("app.tcss"))  # relative paths resolve from this file
    rings = 0

    def bell(self) -> None:
        self.rings += 1
        super().bell()


def _app(client: FakeRuntimeClient) -> RingingConsole:
    return RingingConsole(client, now=fixed_now, refresh_interval=3600)


def _arrives(client: FakeRuntimeClient, n: int, *, kind: str = "approval", prompt: str = "Refund 99 EUR?") -> None:
    task = replace(make_tasks()[0], task_id=tid(40 + n), run_id=rid(13), kind=kind, prompt=prompt,
                   created_at=FIXED_NOW, deadline=FIXED_NOW + timedelta(hours=1))
    client.tasks.append(task)


def _waiting_event(n: int) -> LiveEvent:
    return LiveEvent("step", "step.waiting", rid(13), {"status": "waiting", "waiting_on": "human",
                                                       "step": "approve"}, f"9-{n}")


async def test_a_new_approval_rings_the_bell_and_shows_a_toast_once() -> None:
    client = FakeRuntimeClient()
    app = _app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.rings == 0 and notifications(app) == []  # the three pending when it opened are only counted
        _arrives(client, 1, prompt="Refund [b]99[/b] EUR to T-7?")
        client.push_event(_waiting_event(1))
        await settle(pilot)
        assert app.rings == 1
        (toast,) = notifications(app)
        assert toast.startswith("Approval needed: refund-request · approve · deadline ")
        assert "Refund [b]99[/b] EUR to T-7?" in toast and toast.endswith("2: approvals")  # shown as written
        client.push_event(LiveEvent("run", "run.resumed", rid(13), {"status": "waiting"}, "9-2"))
        await settle(pilot)
        assert app.rings == 1 and len(notifications(app)) == 1  # the same task is not announced again
        client.tasks = [t for t in client.tasks if t.task_id != tid(1)]  # one decided elsewhere: no arrival
        client.push_event(LiveEvent("step", "task.decided", rid(2), {"status": "running"}, "9-3"))
        await settle(pilot)
        assert app.rings == 1
        await pilot.press("2")
        await settle(pilot)
        assert "Refund [b]99[/b] EU" in screen_text(app) and app.nav_counts["approvals"] == 3


async def test_an_uncertain_effect_and_a_burst_are_announced_too() -> None:
    client = FakeRuntimeClient()
    app = _app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        _arrives(client, 1, kind="uncertain", prompt="payments.refund may have run")
        for n in range(2, 6):
            _arrives(client, n)
        client.push_event(_waiting_event(1))
        await settle(pilot)
        assert app.rings == 1  # one bell for the burst
        toasts = notifications(app)
        assert toasts[0].startswith("Decision needed (uncertain effect): refund-request · approve")
        assert len(toasts) == 4 and toasts[-1] == "Approvals: and 2 more waiting: 2 opens the approvals"
