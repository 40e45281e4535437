"""LiveText: folds a run's live entries into the text and tool calls of each LLM call, for readers
(`agentrt tail`, the console). Pure: feed it entries in stream order, from any starting point.

A call that was interrupted (its worker died, the provider dropped the connection) is `abandoned`: its
partial text is kept apart and marked, and the retry's text (a new attempt) starts from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.streams.entries import LLM_ABANDONED, LLM_DELTA, LLM_DONE, LiveEntry

CallKey = tuple[str, int | None, int, int]
"""(step, item, attempt, turn)"""


@dataclass(slots=True)
class CallText:
    step_id: str
    item: int | None
    attempt: int
    turn: int
    text: str = ""
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    """index -> {"id", "name", "arguments"} (arguments: the JSON text so far)"""
    done: bool = False
    abandoned: bool = False
    reason: str | None = None
    ttft_ms: float | None = None
    output_tokens: int | None = None
    output_tokens_per_s: float | None = None
    finish_reason: str | None = None
    chars: int = 0
    """Characters written so far (also counted when the run's payloads are encrypted and no text is sent)."""
    encrypted: bool = False
    last_seq: int = 0
    missing: int = 0
    """Entries of this call that never reached the reader (trimmed, or lost while Redis was down)."""

    @property
    def key(self) -> CallKey:
        return (self.step_id, self.item, self.attempt, self.turn)

    @property
    def open(self) -> bool:
        return not (self.done or self.abandoned)


class LiveText:
    """The calls of one run, in the order they first appeared; `last_id` is the reader's cursor."""

    def __init__(self) -> None:
        self.calls: dict[CallKey, CallText] = {}
        self.last_id: str | None = None

    def feed(self, entry: LiveEntry) -> list[CallText]:
        """Apply one entry; the calls it changed."""
        self.last_id = entry.id
        if entry.type == LLM_ABANDONED and entry.attempt is None:
            newer = entry.data.get("superseded_by")
            if not isinstance(newer, int):
                return []
            changed = [c for c in self.calls.values() if c.step_id == entry.step_id and c.item == entry.item
                       and c.attempt < newer and c.open]
            for call in changed:
                call.abandoned = True
                call.reason = f"attempt {newer} started"
            return changed
        if entry.attempt is None or entry.turn is None:
            return []
        key = (entry.step_id, entry.item, entry.attempt, entry.turn)
        found = self.calls.get(key)
        if found is not None and 0 < entry.seq <= found.last_seq:
            return []  # folded already (a reader that overlapped another, a reconnect's replay): never twice
        call = found if found is not None else CallText(entry.step_id, entry.item, entry.attempt, entry.turn)
        self.calls[key] = call
        if entry.seq > call.last_seq + 1:
            call.missing += entry.seq - call.last_seq - 1
        call.last_seq = max(call.last_seq, entry.seq)
        if entry.type == LLM_DELTA:
            self._delta(call, entry)
        elif entry.type == LLM_DONE:
            call.done = True
            call.finish_reason = entry.data.get("finish_reason")
            call.output_tokens = entry.data.get("output_tokens")
            call.output_tokens_per_s = entry.data.get("output_tokens_per_s")
            call.ttft_ms = entry.data.get("ttft_ms", call.ttft_ms)
        elif entry.type == LLM_ABANDONED:
            call.abandoned = True
            call.reason = str(entry.data.get("reason") or "") or None
        return [call]

    @staticmethod
    def _delta(call: CallText, entry: LiveEntry) -> None:
        if "ttft_ms" in entry.data:
            call.ttft_ms = entry.data["ttft_ms"]
        if entry.text is None and "chars" in entry.data:
            call.encrypted = True
            call.chars += int(entry.data.get("chars") or 0)
        elif entry.text:
            call.text += entry.text
            call.chars += len(entry.text)
        for piece in entry.tools:
            index = piece.get("index")
            if not isinstance(index, int):
                continue
            slot = call.tools.setdefault(index, {"id": None, "name": None, "arguments": ""})
            for name in ("id", "name"):
                if piece.get(name):
                    slot[name] = piece[name]
            if isinstance(piece.get("arguments"), str):
                slot["arguments"] += piece["arguments"]

    def of_step(self, step_id: str, item: int | None = None) -> list[CallText]:
        return [c for c in self.calls.values() if c.step_id == step_id and c.item == item]

    def current(self, step_id: str, item: int | None = None) -> CallText | None:
        """The call of the step's latest attempt and turn (what an inspector shows growing)."""
        calls = self.of_step(step_id, item)
        return max(calls, key=lambda c: (c.attempt, c.turn)) if calls else None
