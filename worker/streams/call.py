"""LiveCall: the coalescing writer of one LLM call's deltas (worker/streams/publisher.py sends them).

A call's first piece is published at once (time to first token is not delayed); after that, pieces are
gathered into one `llm.delta` entry every `flush_ms` or `flush_tokens` pieces, whichever comes first.
Secret values the step holds (its Vault credentials, an API key from the environment) are redacted as in
stored outputs; text that may be the beginning of one is held back until the next piece tells. Every
method is synchronous and only appends to the publisher's queue: the step never waits on Redis here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from worker.secrets.redact import Redactor, variants
from worker.steps.providers import Delta
from worker.streams.entries import LLM_ABANDONED, LLM_DELTA, LLM_DONE

if TYPE_CHECKING:
    from worker.streams.publisher import LivePublisher

REASON_CHARS = 300


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def redaction(secrets: Mapping[str, Mapping[str, Any]]) -> tuple[Redactor | None, tuple[str, ...]]:
    """The redactor of a step's secret values and every form of them (longest first); (None, ()) if none."""
    forms: set[str] = set()
    for values in secrets.values():
        if isinstance(values, Mapping):
            for value in values.values():
                for text in _strings(value):
                    forms |= variants(text)
    if not forms:
        return None, ()
    return Redactor(secrets), tuple(sorted(forms, key=len, reverse=True))


class Held:
    """Text on its way out: complete secret values are redacted; a tail that may begin one is kept back."""

    def __init__(self, redactor: Redactor | None, forms: tuple[str, ...]) -> None:
        self._redactor = redactor
        self._forms = forms
        self._raw = ""

    def add(self, text: str) -> None:
        self._raw += text

    def take(self, final: bool) -> str:
        raw, self._raw = self._raw, ""
        if self._redactor is None or not raw:
            return raw
        clean = self._redactor.text(raw)
        keep = 0 if final else _open_prefix(clean, self._forms)
        if keep:
            clean, self._raw = clean[:-keep], clean[-keep:]
        return clean


def _open_prefix(text: str, forms: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that is the beginning (not the whole) of a secret form."""
    best = 0
    for form in forms:
        for k in range(min(len(form) - 1, len(text)), best, -1):
            if text.endswith(form[:k]):
                best = k
                break
    return best


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class LiveCall:
    """One LLM call's live output: `add` each delta, then `done` (or `abandon` when the call fails)."""

    def __init__(self, publisher: LivePublisher, run_id: str, step_id: str, item: int | None, attempt: int,
                 turn: int, *, secrets: Mapping[str, Mapping[str, Any]], text: bool = True) -> None:
        self._pub = publisher
        self._config = publisher.config
        self._run_id = run_id
        self._base: dict[str, Any] = {"run": run_id, "step": step_id, "item": item, "attempt": attempt,
                                      "turn": turn}
        self._plain = text  # False: an encrypted run: counts only
        self._redactor, self._forms = redaction(secrets)
        self._text = Held(self._redactor, self._forms)
        self._tools: dict[int, dict[str, Any]] = {}
        self._pieces = 0
        self._timer: asyncio.TimerHandle | None = None
        self.seq = 0
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.closed = False
        self.truncated = False

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_at is None else round((self.first_at - self.started) * 1000, 3)

    def restart_clock(self) -> None:
        """The request is about to be sent (again): time to first token counts from here."""
        self.started = time.monotonic()

    def add(self, delta: Delta) -> None:
        if self.closed:
            return
        if self.first_at is None:
            self.first_at = time.monotonic()
        if delta.text:
            self._text.add(delta.text)
        for piece in delta.tools:
            slot = self._tools.setdefault(piece.index, {"id": None, "name": None, "new": False,
                                                        "args": Held(self._redactor, self._forms)})
            if piece.id:
                slot["id"], slot["new"] = piece.id, True
            if piece.name:
                slot["name"], slot["new"] = piece.name, True
            if piece.arguments:
                slot["args"].add(piece.arguments)
        self._pieces += 1
        if self.seq == 0 or self._pieces >= self._config.flush_tokens:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._config.flush_ms / 1000, self.flush)

    def flush(self, final: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pieces = 0
        size = self._config.entry_chars
        text = self._text.take(final)
        tools: list[dict[str, Any]] = []
        for index, slot in sorted(self._tools.items()):
            arguments = slot["args"].take(final)
            for n, part in enumerate(_pieces(arguments, size)):
                if part or (slot["new"] and n == 0):
                    tools.append({"index": index, "id": slot["id"], "name": slot["name"], "arguments": part})
            slot["new"] = False
        if not text and not tools:
            return
        for n, part in enumerate(_pieces(text, size)):
            fields: dict[str, Any] = {"text": part, "tools": tools if n == 0 else []}
            if self.seq == 0:
                fields["ttft_ms"] = self.ttft_ms
            self._emit(LLM_DELTA, fields)

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == LLM_DELTA:
            if self.seq >= self._config.maxlen:
                self.truncated = True  # a run's stream keeps maxlen entries: more would only be trimmed
                return
            if not self._plain:
                fields = {**fields, "chars": len(fields["text"]) + sum(len(t["arguments"]) for t in fields["tools"]),
                          "text": None, "tools": [{**t, "arguments": None} for t in fields["tools"]]}
        self.seq += 1
        self._pub.push(self._run_id, {"t": kind, **self._base, "seq": self.seq, **fields})

    def done(self, *, finish_reason: Any, output_tokens: int | None, tokens_per_s: float | None) -> None:
        if self.closed:
            return
        self.flush(final=True)
        self.closed = True
        self._emit(LLM_DONE, {"finish_reason": finish_reason if isinstance(finish_reason, str) else None,
                              "output_tokens": output_tokens, "ttft_ms": self.ttft_ms,
                              "output_tokens_per_s": tokens_per_s, "truncated": self.truncated})

    def abandon(self, reason: str) -> None:
        """The call failed or was interrupted: publish what is safe of its partial text, then mark it."""
        if self.closed:
            return
        self.flush(final=False)  # a held-back tail may be half a secret: it is dropped, not flushed
        self.closed = True
        if self.seq == 0:  # nothing was published (the call failed before its first piece, or was throttled and
            return  # will be made again under the same attempt): there is nothing to mark
        if self._redactor is not None:
            reason = self._redactor.text(reason)
        self._emit(LLM_ABANDONED, {"reason": reason[:REASON_CHARS]})
