"""The console does not accumulate widgets it no longer shows, however often screens and focus change."""

from __future__ import annotations

import gc

from textual.pilot import Pilot
from textual.widgets._footer import FooterKey

from console.widgets.footer import KeyFooter
from tests.console.helpers import make_app, settle

SIZE = (80, 24)


async def _look_around(pilot: Pilot[None], rounds: int) -> None:
    """What an operator does all night: open a run, look at its tabs, go back, switch screens."""
    for _ in range(rounds):
        for keys in (("g", "enter"), ("w",), ("e",), ("escape",), ("5",), ("2",), ("3",), ("1",)):
            await pilot.press(*keys)
            await settle(pilot)


def _removed_footer_keys() -> int:
    gc.collect()
    return sum(1 for k in gc.get_objects() if isinstance(k, FooterKey) and not k.is_attached)


async def test_moving_between_screens_does_not_accumulate_removed_widgets() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await _look_around(pilot, 2)
        early = _removed_footer_keys()  # a hidden screen keeps its last layout until it is shown again
        await _look_around(pilot, 8)
        assert _removed_footer_keys() <= early, "footer keys of every bindings change are kept alive"
        for footer in app.query(KeyFooter):  # only the keys on screen watch their footer (the palette key does not)
            bound = [k for k in footer.query(FooterKey) if not k.has_class("-command-palette")]
            assert len(getattr(footer, "__watchers", {}).get("compact", [])) == len(bound)
