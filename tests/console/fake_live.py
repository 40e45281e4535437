"""FakeRuntimeClient, the live part (issue 19): `live_entries` and `follow_live` like worker/client/live.py.

Each run's live stream is a list of `LiveEntry` with stream ids on the fake clock. `live_entries` answers what
the list holds after a cursor (a bad cursor is a WorkerError, an unknown run NotFound); `follow_live` yields
that, then what a test pushes (`push_live`), and with `until_finished` ends once the run (or its step
`step_id`) has finished according to `get_run`, re-checked every `block_ms` or when poked (`poke_live`).
`live_followers` counts the `follow_live` iterators open right now (the console must close them).

The data: run 22 (support-reply) streams two steps at once: `draft` (llm, attempt 1, text mid-stream) and
`resolve` (agent, attempt 1 abandoned by a dead worker, attempt 2 writing and forming a tool call); run 23
(ask, completed) holds a finished stream: attempt 1 broke off mid-answer, attempt 2 wrote the whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from worker.client.live import LiveEntry
from worker.errors import WorkerError
from worker.models import AttemptView, EventView, RunDetail, RunStatus, RunSummary, StepStatus, StepView
from worker.streams.entries import FIRST_ID, LLM_ABANDONED, LLM_DELTA, LLM_DONE, parse_stream_id

LIVE_HASH = {"support-reply": "7902699be42c8a8e46fbbb4501726517e86b22c5",
             "ask": "b6589fc6ab0dc82cf12099d1c2d40ab994e8410c"}
DRAFT_SO_FAR = ("Hello Ada, thanks for writing in about order O-77. I checked it: the parcel left our "
                "warehouse on Tuesday and the carrier scanned it in Leipzig this morning, so it")
DRAFT_MORE = (" should reach you by Friday. If it does not, reply to this mail and I will",
              " send a replacement at once.")
RESOLVE_PARTIAL = "Checking the order O-77 first, then the refund policy for shipped orders"
RESOLVE_SO_FAR = "Looking up order O-77 before deciding on the refund."
ASK_ANSWER = "The refund for ticket T-1 was made: 40 EUR, back on the card on the 3rd."


class LiveScript:
    """Builds one run's entries with increasing stream ids (every `step_ms` on the stream's clock)."""

    def __init__(self, run_id: str, start: datetime, step_ms: int = 150) -> None:
        self.run_id = run_id
        self.ms = int(start.timestamp() * 1000)
        self.step_ms = step_ms
        self.seqs: dict[tuple[str, int | None, int, int], int] = {}

    def entry(self, kind: str, step: str, attempt: int | None, turn: int | None = 0, *, text: str | None = None,
              tools: tuple[dict[str, Any], ...] = (), item: int | None = None, **data: Any) -> LiveEntry:
        self.ms += self.step_ms
        seq = 0
        if attempt is not None and turn is not None:
            key = (step, item, attempt, turn)
            seq = self.seqs[key] = self.seqs.get(key, 0) + 1
        return LiveEntry(f"{self.ms}-0", kind, self.run_id, step, item, attempt, turn, seq, text, tools, data)

    def delta(self, step: str, attempt: int, text: str | None = None, *, turn: int = 0,
              tools: tuple[dict[str, Any], ...] = (), **data: Any) -> LiveEntry:
        return self.entry(LLM_DELTA, step, attempt, turn, text=text, tools=tools, **data)


def live_runs(now: datetime, rid: Any) -> list[RunSummary]:
    return [RunSummary(rid(22), "support-reply", LIVE_HASH["support-reply"], RunStatus.RUNNING, now - timedelta(
                minutes=1), now, None, "draft", None, None, None, "api"),
            RunSummary(rid(23), "ask", LIVE_HASH["ask"], RunStatus.COMPLETED, now - timedelta(minutes=9),
                       now - timedelta(minutes=8), now - timedelta(minutes=8), None, None, None, None, "api")]


def _attempt(n: int, start: datetime, end: datetime | None, status: str, error: str | None = None) -> AttemptView:
    return AttemptView(n, start, end, status, error)


def streaming_detail(summary: RunSummary) -> RunDetail:
    """Run 22: `classify` done; `draft` (llm) and `resolve` (agent, its worker died in attempt 1) running."""
    t0 = summary.created_at

    def s(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    lost = "worker web-2 stopped answering (lease expired)"
    steps = (
        StepView("classify", "llm", None, StepStatus.COMPLETED, (_attempt(1, s(1), s(3), "completed"),),
                 {"model": "gpt-4o-mini"}, {"text": "shipping"}, None, f"{summary.run_id}:classify:0"),
        StepView("draft", "llm", None, StepStatus.RUNNING, (_attempt(1, s(4), None, "running"),),
                 {"model": "gpt-4o-mini", "prompt": "Draft a reply to Ada"}, None, None, f"{summary.run_id}:draft:0"),
        StepView("resolve", "agent", None, StepStatus.RUNNING,
                 (_attempt(1, s(4), s(30), "failed", lost), _attempt(2, s(31), None, "running")),
                 {"model": "gpt-4o-mini", "prompt": "Refund order O-77?"}, None, None, f"{summary.run_id}:resolve:0"),
    )
    rows = [(0, "run.created", None, None), (1, "step.started", "classify", 1), (3, "step.completed", "classify", 1),
            (4, "step.started", "draft", 1), (4, "step.started", "resolve", 1), (30, "step.failed", "resolve", 1),
            (31, "step.started", "resolve", 2)]
    events = tuple(EventView(i + 1, s(sec), kind, step, None, att, {}) for i, (sec, kind, step, att) in enumerate(rows))
    return RunDetail(summary, {"ticket": "T-77"}, None, steps, events, ())


def ask_detail(summary: RunSummary) -> RunDetail:
    t0 = summary.created_at
    steps = (StepView("ask", "llm", None, StepStatus.COMPLETED,
                      (_attempt(1, t0, t0 + timedelta(seconds=2), "failed", "openai: the stream broke off"),
                       _attempt(2, t0 + timedelta(seconds=3), t0 + timedelta(seconds=5), "completed")),
                      {"model": "m"}, {"text": ASK_ANSWER}, None, f"{summary.run_id}:ask:0"),)
    return RunDetail(summary, {}, {"text": ASK_ANSWER}, steps, (), ())


def streaming_entries(run_id: str, start: datetime) -> list[LiveEntry]:
    sc = LiveScript(run_id, start)
    words = DRAFT_SO_FAR.split(" ")
    out = [sc.delta("resolve", 1, RESOLVE_PARTIAL[:30], ttft_ms=240.0), sc.delta("resolve", 1, RESOLVE_PARTIAL[30:]),
           sc.entry(LLM_ABANDONED, "resolve", None, None, superseded_by=2),
           sc.delta("draft", 1, " ".join(words[:3]), ttft_ms=182.0)]
    for i in range(3, len(words), 6):
        out.append(sc.delta("draft", 1, " " + " ".join(words[i:i + 6])))
    out += [sc.delta("resolve", 2, RESOLVE_SO_FAR, ttft_ms=205.0),
            sc.delta("resolve", 2, tools=({"index": 0, "id": "call_0", "name": "lookup", "arguments": '{"ord'},)),
            sc.delta("resolve", 2, tools=({"index": 0, "arguments": 'er": "O-7'},))]
    return out


def finished_entries(run_id: str, start: datetime) -> list[LiveEntry]:
    sc = LiveScript(run_id, start)
    half = len(ASK_ANSWER) // 3
    return [sc.delta("ask", 1, ASK_ANSWER[:10], ttft_ms=150.0), sc.delta("ask", 1, ASK_ANSWER[10:half]),
            sc.entry(LLM_ABANDONED, "ask", 1, 0, reason="openai: the stream broke off before the answer was complete"),
            sc.delta("ask", 2, ASK_ANSWER[:half], ttft_ms=160.0), sc.delta("ask", 2, ASK_ANSWER[half:]),
            sc.entry(LLM_DONE, "ask", 2, 0, finish_reason="stop", output_tokens=20, ttft_ms=160.0,
                     output_tokens_per_s=48.5, truncated=False)]


class FakeLive:
    """Mixed into FakeRuntimeClient, which supplies `_check`, `_find_run`, `get_run`, `unlisted`, `details`."""

    clock: datetime
    unlisted: list[RunSummary]
    details: dict[str, RunDetail]

    def __init__(self, rid: Any) -> None:
        running, finished = live_runs(self.clock, rid)
        self.unlisted += [running, finished]
        self.details[running.run_id] = streaming_detail(running)
        self.details[finished.run_id] = ask_detail(finished)
        self.live: dict[str, list[LiveEntry]] = {
            running.run_id: streaming_entries(running.run_id, self.clock - timedelta(seconds=5)),
            finished.run_id: finished_entries(finished.run_id, finished.created_at)}
        self.live_scripts = {running.run_id: LiveScript(running.run_id, self.clock)}
        for key, seq in _seqs(self.live[running.run_id]).items():
            self.live_scripts[running.run_id].seqs[key] = seq
        self.live_followers = 0
        """`follow_live` iterators open right now."""
        self.live_follows: list[tuple[str, str | None, str | None]] = []
        """Every `follow_live` begun: (run id, after, step id)."""
        self._live_poke: asyncio.Event | None = None

    # -- knobs for tests ---------------------------------------------------------------------
    def push_live(self, entry: LiveEntry) -> None:
        self.live.setdefault(entry.run_id, []).append(entry)
        self.poke_live()

    def poke_live(self) -> None:
        """Wake the followers (after a test changed a run's detail: they check whether it has finished)."""
        if self._live_poke is not None:
            self._live_poke.set()

    # -- RuntimeClient surface ---------------------------------------------------------------
    def _live_after(self, run_id: str, after: str | None) -> list[LiveEntry]:
        cursor = parse_stream_id(after or FIRST_ID)
        if cursor is None:
            raise WorkerError(f"{after!r} is not a live stream id (like 1718000000000-0)")
        return [e for e in self.live.get(run_id, []) if (parse_stream_id(e.id) or (0, 0)) > cursor]

    async def live_entries(self, run_id: str, after: str | None = None, *, count: int = 1000,
                           checked: bool = False) -> list[LiveEntry]:
        self._check()  # type: ignore[attr-defined]
        self._live_after(run_id, after)  # the cursor first, like the real one
        run_id = self._find_run(run_id).run_id  # type: ignore[attr-defined]
        return self._live_after(run_id, after)[:count]

    async def _live_finished(self, run_id: str, step_id: str | None) -> bool:
        detail: RunDetail = await self.get_run(run_id)  # type: ignore[attr-defined]
        if detail.summary.status.terminal:
            return True
        views = [v for v in detail.steps if v.step_id == step_id and v.item is None]
        return bool(views) and views[0].status in (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED,
                                                   StepStatus.CANCELLED)

    async def follow_live(self, run_id: str, *, after: str | None = None, step_id: str | None = None,
                          block_ms: int = 500, until_finished: bool = True) -> AsyncIterator[LiveEntry]:
        self._check()  # type: ignore[attr-defined]
        self._live_after(run_id, after)
        run_id = self._find_run(run_id).run_id  # type: ignore[attr-defined]
        if self._live_poke is None:
            self._live_poke = asyncio.Event()
        poke = self._live_poke
        self.live_follows.append((run_id, after, step_id))
        self.live_followers += 1
        cursor = after
        try:
            while True:
                poke.clear()
                got = self._live_after(run_id, cursor)
                for entry in got:
                    cursor = entry.id
                    if step_id is None or entry.step_id == step_id:
                        yield entry
                if not got and until_finished and await self._live_finished(run_id, step_id):
                    return
                if not got:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(poke.wait(), block_ms / 1000)
        finally:
            self.live_followers -= 1


def _seqs(entries: list[LiveEntry]) -> dict[tuple[str, int | None, int, int], int]:
    out: dict[tuple[str, int | None, int, int], int] = {}
    for e in entries:
        if e.attempt is not None and e.turn is not None:
            out[(e.step_id, e.item, e.attempt, e.turn)] = e.seq
    return out


__all__ = ["DRAFT_MORE", "DRAFT_SO_FAR", "LLM_DELTA", "FakeLive", "LiveScript"]
