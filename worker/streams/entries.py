"""The entries of a run's live stream, their encoding, and the settings that bound the stream.

One Redis stream per run (`Keys.live(run_id)`); each entry has one field `e` holding compact JSON:

    {"t": "llm.delta", "run": RUN, "step": "classify", "item": null, "attempt": 1, "turn": 0, "seq": 3,
     "text": "…", "tools": [{"index": 0, "id": "call_1", "name": "get_ticket", "arguments": "{\\"id\\": "}],
     "ttft_ms": 182.4}                                   # ttft_ms: on a call's first delta only
    {"t": "llm.done", …, "seq": 9, "finish_reason": "stop", "output_tokens": 120, "ttft_ms": 182.4,
     "output_tokens_per_s": 61.2, "truncated": false}
    {"t": "llm.abandoned", …, "seq": 4, "reason": "openai: the stream ended before the answer did"}
    {"t": "llm.abandoned", "run": RUN, "step": "classify", "item": null, "attempt": null, "turn": null,
     "superseded_by": 2}                                 # attempt 2 began: unfinished calls before it are dead

A call is (step, item, attempt, turn): `turn` is 0 for an `llm` step and the LLM turn (0, 1, …) of an
`agent` step. `seq` numbers a call's entries from 1 (a jump is a gap: the stream was trimmed, or Redis was
down). In a run whose payloads are encrypted (Vault transit), `text` and tool `arguments` are null and
`chars` counts what was written: nothing of the answer rests in Redis.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

LLM_DELTA = "llm.delta"
LLM_DONE = "llm.done"
LLM_ABANDONED = "llm.abandoned"
ENTRY_TYPES = frozenset({LLM_DELTA, LLM_DONE, LLM_ABANDONED})

STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
FIRST_ID = "0-0"


def parse_stream_id(value: str) -> tuple[int, int] | None:
    """A Redis stream id `MS-N` as a comparable pair, or None if `value` is not one."""
    m = STREAM_ID.match(value)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _env_number(name: str, default: float, low: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return max(low, value)


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """How `llm`/`agent` steps stream, from the operator's environment (never from a workflow)."""

    enabled: bool = True
    """AGENTRT_LLM_STREAM (on): off: plain calls, and nothing on the live channel."""
    maxlen: int = 2000
    """AGENTRT_LIVE_MAXLEN: entries a run's live stream keeps (the oldest are trimmed)."""
    ttl: int = 3600
    """AGENTRT_LIVE_TTL: seconds a run's live stream lives after its last entry."""
    flush_ms: float = 50.0
    flush_tokens: int = 64
    """A call's deltas are coalesced: an entry every flush_ms or flush_tokens pieces, whichever comes first
    (a call's first piece goes out at once: time to first token is not delayed)."""
    entry_chars: int = 1024
    """Text (or tool arguments) one entry carries at most; more is split over several entries. With `maxlen`,
    this bounds a run's stream: at most maxlen * entry_chars characters of text and arguments (2.5 MB in Redis at
    the defaults; a real answer's entries are ~64 tokens, a few hundred characters)."""
    queue_max: int = 20_000
    """Entries waiting for Redis in one worker; beyond that they are dropped (Redis is slow or down)."""

    @classmethod
    def from_env(cls) -> LiveConfig:
        mode = os.environ.get("AGENTRT_LLM_STREAM", "on").strip().lower()
        return cls(enabled=mode not in ("off", "0", "false", "no"),
                   maxlen=int(_env_number("AGENTRT_LIVE_MAXLEN", 2000, 10)),
                   ttl=int(_env_number("AGENTRT_LIVE_TTL", 3600, 1)))


@dataclass(frozen=True, slots=True)
class LiveEntry:
    """One entry of a run's live stream, as readers see it (`id` is its place in the stream: the cursor)."""

    id: str
    type: str
    run_id: str
    step_id: str
    item: int | None
    attempt: int | None
    turn: int | None
    seq: int
    text: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    """The rest: ttft_ms, finish_reason, output_tokens, output_tokens_per_s, truncated, reason,
    superseded_by, chars."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "run_id": self.run_id, "step_id": self.step_id,
                "item": self.item, "attempt": self.attempt, "turn": self.turn, "seq": self.seq,
                "text": self.text, "tools": list(self.tools), **self.data}


_BASE = ("t", "run", "step", "item", "attempt", "turn", "seq", "text", "tools")


def encode_entry(body: dict[str, Any]) -> dict[str, bytes]:
    return {"e": orjson.dumps(body)}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decode_entry(stream_id: bytes | str, fields: dict[bytes, bytes]) -> LiveEntry | None:
    """The entry, or None for one this version does not know (readers skip it)."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    try:
        body = orjson.loads(fields.get(b"e", b"{}"))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("t") not in ENTRY_TYPES or not isinstance(body.get("step"), str):
        return None
    text = body.get("text")
    tools = body.get("tools")
    return LiveEntry(id=sid, type=body["t"], run_id=str(body.get("run") or ""), step_id=body["step"],
                     item=_int(body.get("item")), attempt=_int(body.get("attempt")), turn=_int(body.get("turn")),
                     seq=_int(body.get("seq")) or 0, text=text if isinstance(text, str) else None,
                     tools=tuple(t for t in tools if isinstance(t, dict)) if isinstance(tools, list) else (),
                     data={k: v for k, v in body.items() if k not in _BASE})
