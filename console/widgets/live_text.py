"""The inspector's live text: what a running `llm`/`agent` step's current attempt is writing, as it is written.

`LiveView` is one Static above the inspector's body. `show(target)` follows the run's live stream for that
step (`live_entries` for the text so far, then `follow_live` from its last id); `show(None)` stops. The screen
calls it on every inspector render, so following lasts exactly as long as a running llm/agent step is shown:
another selection, leaving the screen or the step ending stops it, and nothing is read otherwise. Entries are
folded by `LiveText` (an abandoned attempt's partial text is kept apart and marked, never spliced into the new
attempt's); redraws are coalesced to at most one per REDRAW_EVERY seconds, and only this widget redraws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker

from console.formatting import item_suffix
from worker.client.live import CallText, LiveEntry, LiveText
from worker.errors import WorkerError
from worker.models import RunDetail
from worker.streams.entries import parse_stream_id

if TYPE_CHECKING:
    from console.app import AgentConsole

REDRAW_EVERY = 0.1
"""Seconds between two redraws of the live text (at most 10 a second, however fast the deltas come)."""
LIVE_KINDS = frozenset({"llm", "agent"})
LIVE_STATUSES = frozenset({"running"})
PAGE = 1000
"""Entries asked of `live_entries` at a time."""
PARTIAL_TAIL = 120
"""Characters of an abandoned attempt's partial text the view shows."""


@dataclass(frozen=True, slots=True)
class LiveTarget:
    run_id: str
    step_id: str
    item: int | None


def live_target(run_id: str, key: tuple[object, ...], detail: RunDetail | None) -> LiveTarget | None:
    """The step to follow when the tree's selection is `key`: a running llm/agent step (or item, or attempt)."""
    if detail is None or key[0] not in ("step", "attempt"):
        return None
    item = key[2] if isinstance(key[2], int) else None
    view = next((v for v in detail.steps if v.step_id == key[1] and v.item == item), None)
    if view is None or view.kind not in LIVE_KINDS or str(view.status) not in LIVE_STATUSES:
        return None
    if any(v.step_id == view.step_id and v.item is not None for v in detail.steps) and item is None:
        return None  # a foreach head: its items stream, each followed when selected
    return LiveTarget(run_id, view.step_id, item)


def _ms(entry_id: str) -> int | None:
    parsed = parse_stream_id(entry_id)
    return None if parsed is None else parsed[0]


def tokens_per_s(call: CallText, span_ms: tuple[int, int] | None) -> str:
    """The call's rate: the provider's count once done, else ≈ characters/4 over the stream's own clock."""
    if call.output_tokens_per_s is not None:
        return f"{call.output_tokens_per_s:.0f} tok/s"
    if span_ms is None or span_ms[1] - span_ms[0] < 200 or not call.chars:
        return "— tok/s"
    return f"≈{call.chars / 4 / ((span_ms[1] - span_ms[0]) / 1000):.0f} tok/s"


def _tail(text: str, width: int, lines: int, console: Any) -> Text:
    """The last `lines` lines of `text` wrapped at `width` (what is being written stays in view)."""
    width = max(10, width)
    clip = text[-(width * (lines + 2) + 1):]
    wrapped = Text(clip).wrap(console, width)
    shown = list(wrapped)[-lines:]
    out = Text()
    if len(clip) < len(text) or len(wrapped) > len(shown):
        out.append(f"… {max(0, len(text) - sum(len(x) for x in shown))} earlier characters\n", style="dim")
    for i, line in enumerate(shown):
        out.append_text(line)
        if i < len(shown) - 1:
            out.append("\n")
    return out


def _height(text: Text, width: int, console: Any) -> int:
    """Lines `text` takes at `width`: the body comes wrapped already, so only a longer line is wrapped here."""
    total = 0
    for line in text.split("\n", allow_blank=True):
        total += 1 if line.cell_len <= width else len(line.wrap(console, width))
    return total


def render_live(text: LiveText, target: LiveTarget, spans: dict[Any, tuple[int, int]], *, width: int,
                height: int, ended: bool, console: Any, note: str | None = None) -> Text:
    """The live block: a header (attempt, turn, time to first token, rate), abandoned partials, the text's
    tail with a cursor, the tool calls being formed."""
    out = Text()
    call = text.current(target.step_id, target.item)
    where = f"{target.step_id}{item_suffix(target.item)}"
    if call is None:
        out.append("● live ", style="bold green")
        out.append(f"{where}: " + (note or ("stream ended" if ended else "waiting for the first token…")),
                   style="dim")
        return out
    state = ("done" if call.done else "abandoned" if call.abandoned else "ended" if ended else "writing…")
    out.append("● live " if call.open and not ended else "○ live ", style="bold green" if call.open else "dim")
    out.append(f"{where} · attempt {call.attempt} · turn {call.turn} · {state}\n", style="bold")
    ttft = "—" if call.ttft_ms is None else f"{call.ttft_ms:.0f} ms"
    out.append(f"ttft {ttft} · {tokens_per_s(call, spans.get(call.key))} · {call.chars:,} chars", style="dim")
    if call.missing:
        out.append(f" · {call.missing} entries lost", style="yellow")
    out.append("\n")
    used = 3
    for old in text.of_step(target.step_id, target.item):
        if old is call or not old.abandoned or old.attempt >= call.attempt:
            continue
        out.append(f"✗ attempt {old.attempt} turn {old.turn} abandoned", style="bold red")
        out.append(f" ({old.reason or 'interrupted'}): ", style="red")
        partial = old.text[-PARTIAL_TAIL:]
        out.append(("…" if len(old.text) > len(partial) else "") + partial.replace("\n", " "), style="dim strike")
        out.append("\n")
        used += 2
    if call.abandoned:
        out.append(f"✗ abandoned ({call.reason or 'interrupted'}): the retry starts from nothing\n", style="bold red")
        used += 1
    tools = [call.tools[i] for i in sorted(call.tools)]
    lines = max(3, height - used - len(tools))
    if call.encrypted:
        out.append(f"(encrypted run: {call.chars:,} characters written)", style="dim")
    elif call.text:
        body = _tail(call.text, width, lines, console)
        if call.abandoned:
            body.stylize("dim strike")
        out.append_text(body)
    else:
        out.append("no text yet" if call.open else "no text", style="dim")
    if call.open and not ended:
        out.append("▌", style="green")
    for tool in tools:
        out.append(f"\n→ {tool.get('name') or '?'}", style="bold")
        args = str(tool.get("arguments") or "")
        out.append(f"({args[-max(10, width - 4):]}" + ("" if not call.open else "…"), style="cyan")
    return out


class LiveView(Static):
    """What the selected running llm/agent step is writing; hidden (and reading nothing) otherwise."""

    DEFAULT_CSS = "LiveView { height: auto; margin: 0 0 1 0; border-bottom: hkey $panel-lighten-2; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.display = False
        self.target: LiveTarget | None = None
        self.text = LiveText()
        self.spans: dict[Any, tuple[int, int]] = {}
        self.ended = False
        self.note: str | None = None
        self.redraws = 0
        """Redraws so far (tests check the coalescing)."""
        self._worker: Worker[None] | None = None
        self._timer: Timer | None = None
        self._last_draw = 0.0
        self._generation = 0
        """Bumped by every show/stop: a follower of an earlier one (its cancellation can land late, inside a
        Redis read) feeds nothing."""
        self._lines = -1
        """Lines of the last redraw: an unchanged height redraws this widget alone, without a layout pass."""

    @property
    def following(self) -> bool:
        return self._worker is not None and not self._worker.is_finished

    def show(self, target: LiveTarget | None) -> None:
        """Follow `target` (nothing new when it already is), or stop following and hide (None)."""
        if target == self.target and target is not None:
            return
        self.stop()
        if target is None:
            return
        self.target, self.text, self.spans, self.ended, self.note = target, LiveText(), {}, False, None
        self.display = True
        self._lines = -1
        self._draw()
        self._worker = self.run_worker(self._follow(target, self._generation), group="live", exclusive=True,
                                       exit_on_error=False)

    def stop(self) -> None:
        self._generation += 1
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.target = None
        self.display = False

    def on_unmount(self) -> None:
        self.stop()

    async def _follow(self, target: LiveTarget, generation: int) -> None:
        client = cast("AgentConsole", self.app).client
        cursor: str | None = None
        try:
            while True:  # the text so far, in pages
                page = await client.live_entries(target.run_id, after=cursor, count=PAGE)
                for entry in page:
                    cursor = entry.id
                    self._feed(entry, generation)
                if len(page) < PAGE:
                    break
            if generation != self._generation:
                return
            self._draw_soon()
            async for entry in client.follow_live(target.run_id, after=cursor, step_id=target.step_id):
                if generation != self._generation:
                    return
                self._feed(entry, generation)
        except (WorkerError, OSError) as exc:
            if generation == self._generation:
                self.note = f"live stream unavailable: {exc}"
        if self.target == target and generation == self._generation:
            self.ended = True
            self._draw_soon()

    def _feed(self, entry: LiveEntry, generation: int) -> None:
        if (generation != self._generation or self.target is None or entry.step_id != self.target.step_id
                or entry.item != self.target.item):
            return
        for call in self.text.feed(entry):
            ms = _ms(entry.id)
            if ms is not None and entry.type == "llm.delta":
                first = self.spans.get(call.key, (ms, ms))[0]
                self.spans[call.key] = (first, ms)
        self._draw_soon()

    def _draw_soon(self) -> None:
        if self._timer is not None:
            return
        wait = self._last_draw + REDRAW_EVERY - time.monotonic()
        if wait <= 0:
            self._draw()
        else:
            self._timer = self.set_timer(wait, self._draw)

    def _draw(self) -> None:
        self._timer = None
        if self.target is None:
            return
        self._last_draw = time.monotonic()
        self.redraws += 1
        parent = self.parent
        height = parent.size.height if isinstance(parent, Widget) and parent.size.height else 20
        width = self.content_region.width or max(20, self.app.size.width // 2)
        shown = render_live(self.text, self.target, self.spans, width=width, height=max(6, height - 2),
                            ended=self.ended, console=self.app.console, note=self.note)
        lines = _height(shown, width, self.app.console)
        self.update(shown, layout=lines != self._lines)  # a layout pass of the screen cost ~3/4 of a redraw
        self._lines = lines
