"""The inspector's live text of a running llm/agent step (issue 19), driven with a Pilot at 80x24 against
FakeRuntimeClient (run 22: `draft` writing, `resolve` retrying after an abandoned attempt), and once against a
real worker with the paced streaming peer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime

from textual.pilot import Pilot
from textual.widgets import Static, Tree

from console.app import AgentConsole
from console.screens.run_detail import RunDetailScreen
from console.widgets.live_text import REDRAW_EVERY, LiveView
from tests.console.fake_live import DRAFT_MORE, DRAFT_SO_FAR, RESOLVE_PARTIAL, RESOLVE_SO_FAR
from tests.console.fakes import FakeRuntimeClient, rid
from tests.console.helpers import make_app, settle
from tests.streams.support import ANSWER, llm_workflow
from tests.support.llm_peer import LlmPeer, openai_text
from tests.support.runtime import client_for, running_worker, write_workflow
from worker.config import Settings
from worker.models import RunStatus, StepStatus

SIZE = (80, 24)


def live(app: AgentConsole) -> LiveView:
    return app.screen.query_one("#inspector-live", LiveView)


def live_text(app: AgentConsole) -> str:
    view = live(app)
    return str(view.render()) if view.display else ""


def flat(text: str) -> str:
    return " ".join(text.replace("▌", "").split())


async def select(pilot: Pilot[None], key: tuple[object, ...]) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, RunDetailScreen)
    screen.query_one("#step-tree", Tree).move_cursor(screen._tree_nodes[key], animate=False)
    await settle(pilot)


async def until(pilot: Pilot[None], check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the console did not show the expected state in time"
        await pilot.pause(0.05)


async def open_live_run(pilot: Pilot[None], app: AgentConsole, key: tuple[object, ...]) -> None:
    await settle(pilot)
    app.open_run(rid(22))
    await settle(pilot)
    await select(pilot, key)


async def test_opening_mid_stream_shows_the_text_so_far_then_follows() -> None:
    fake = FakeRuntimeClient()
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_live_run(pilot, app, ("step", "draft", None))
        await until(pilot, lambda: "Leipzig" in live_text(app))
        shown = flat(live_text(app))
        assert "draft · attempt 1 · turn 0 · writing…" in shown and "ttft 182 ms" in shown
        assert "tok/s" in shown and fake.live_followers == 1
        assert flat(DRAFT_SO_FAR)[-40:] in shown  # the newest text is in view, even at 80x24
        script = fake.live_scripts[rid(22)]
        for piece in DRAFT_MORE:
            fake.push_live(script.delta("draft", 1, piece))
        await until(pilot, lambda: "replacement at once." in flat(live_text(app)))
        assert "should reach you by Friday" in flat(live_text(app))
        assert fake.live_follows[-1][1] is not None, "following goes on after the text so far, not from the start"
        # the table and the inspector body are not redrawn per delta: the body still says what it said
        body = str(app.screen.query_one("#inspector-body", Static).render())
        assert "draft" in body and "running" in body


async def test_changing_the_selection_or_leaving_the_screen_stops_following() -> None:
    fake = FakeRuntimeClient()
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_live_run(pilot, app, ("step", "draft", None))
        await until(pilot, lambda: fake.live_followers == 1)
        await select(pilot, ("step", "classify", None))  # a finished llm step: nothing to follow
        await until(pilot, lambda: fake.live_followers == 0)
        assert not live(app).display and not live(app).following
        await select(pilot, ("run",))
        await pilot.pause(0.2)
        assert fake.live_followers == 0 and len(fake.live_follows) == 1
        await select(pilot, ("step", "resolve", None))
        await until(pilot, lambda: fake.live_followers == 1)
        await pilot.press("question_mark")  # another screen over it: nobody looks
        await until(pilot, lambda: fake.live_followers == 0)
        await pilot.press("escape")
        await until(pilot, lambda: fake.live_followers == 1)  # back: follows again
        await pilot.press("escape")  # leave the run detail
        await until(pilot, lambda: fake.live_followers == 0)


async def test_a_follower_left_over_from_an_earlier_showing_feeds_nothing() -> None:
    """Following the same step again (away and back) while the earlier follower is still draining (its
    cancellation can land late, inside a Redis read): the text is shown once, not twice as fast."""
    fake = FakeRuntimeClient()
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_live_run(pilot, app, ("step", "draft", None))
        await until(pilot, lambda: "Leipzig" in live_text(app))
        view = live(app)
        stale = view._generation
        await select(pilot, ("run",))
        await select(pilot, ("step", "draft", None))
        await until(pilot, lambda: "Leipzig" in live_text(app))
        before = flat(live_text(app))
        script = fake.live_scripts[rid(22)]
        late = script.delta("draft", 1, " DUPLICATE?")
        view._feed(late, stale)  # what the earlier follower would still deliver
        await pilot.pause(REDRAW_EVERY * 3)
        assert "DUPLICATE?" not in flat(live_text(app)) and flat(live_text(app)) == before
        fake.push_live(late)  # the current follower takes it, once
        await until(pilot, lambda: "DUPLICATE?" in flat(live_text(app)))
        assert flat(live_text(app)).count("DUPLICATE?") == 1


async def test_an_abandoned_attempt_is_marked_and_never_spliced_into_the_retry() -> None:
    fake = FakeRuntimeClient()
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_live_run(pilot, app, ("step", "resolve", None))
        await until(pilot, lambda: "lookup" in live_text(app))
        shown = flat(live_text(app))
        assert "resolve · attempt 2 · turn 0 · writing…" in shown
        assert "✗ attempt 1 turn 0 abandoned (attempt 2 started)" in shown
        assert RESOLVE_PARTIAL[-20:] in shown and RESOLVE_SO_FAR in shown
        assert RESOLVE_PARTIAL + RESOLVE_SO_FAR not in shown.replace(" ", "")
        assert '→ lookup({"order": "O-7…' in shown  # the tool call being formed
        view = live(app)
        current = view.text.current("resolve")
        assert current is not None and current.text == RESOLVE_SO_FAR and current.attempt == 2


async def test_the_step_ending_ends_the_following_and_redraws_are_coalesced() -> None:
    fake = FakeRuntimeClient()
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_live_run(pilot, app, ("step", "draft", None))
        await until(pilot, lambda: fake.live_followers == 1 and "Leipzig" in live_text(app))
        view = live(app)
        before, started = view.redraws, time.monotonic()
        script = fake.live_scripts[rid(22)]
        for i in range(200):  # a flood of deltas: the view redraws at most every REDRAW_EVERY seconds
            fake.push_live(script.delta("draft", 1, f" w{i}"))
            if i % 20 == 0:
                await asyncio.sleep(0.02)
        await until(pilot, lambda: "w199" in live_text(app))
        elapsed = time.monotonic() - started
        assert view.redraws - before <= elapsed / REDRAW_EVERY + 3
        # the step completes: the follower ends by itself, and the reload hides the live text
        detail = fake.details[rid(22)]
        steps = tuple(replace(v, status=StepStatus.COMPLETED, output={"text": "done"}) if v.step_id == "draft" else v
                      for v in detail.steps)
        fake.details[rid(22)] = replace(detail, steps=steps)
        fake.poke_live()
        await until(pilot, lambda: fake.live_followers == 0)
        screen = app.screen
        assert isinstance(screen, RunDetailScreen)
        screen.request_reload()
        await settle(pilot)
        await until(pilot, lambda: not live(app).display)


async def test_the_inspector_shows_the_text_growing_against_a_real_worker(settings: Settings) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    with LlmPeer() as peer:
        peer.tokens_per_s = 12
        peer.script([openai_text(ANSWER, usage=(30, 44))])
        async with running_worker(settings), client_for(settings) as setup, client_for(settings) as client:
            run_id = await setup.start_run("ask", {"llm": peer.openai_url})
            deadline = time.monotonic() + 20
            while not peer.first_pieces:  # the model has begun writing (the worker runs in this loop)
                assert time.monotonic() < deadline, "the peer was never asked"
                await asyncio.sleep(0.05)
            app = AgentConsole(client, now=lambda: datetime.now(tz=UTC), refresh_interval=1.0)
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                app.open_run(run_id)
                await settle(pilot)
                await select(pilot, ("step", "ask", None))
                seen: list[str] = []
                deadline += 30
                while (await setup.get_run(run_id)).summary.status is not RunStatus.COMPLETED:
                    assert time.monotonic() < deadline
                    text = flat(live_text(app))
                    if text and (not seen or text != seen[-1]):
                        seen.append(text)
                    await pilot.pause(0.1)
        lengths = [len(s) for s in seen if "ask · attempt 1" in s]
        assert len(lengths) >= 3, seen  # grew while it was written
        assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
        assert any("writing…" in s and "ttft" in s for s in seen)
