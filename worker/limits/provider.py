"""What an LLM call is expected to cost before it goes out, and what the provider's answer says about its own
limits. Pure: no I/O.

- `estimate_tokens`: the prompt's size (characters / 4, tool schemas included) plus `max_tokens`, or
  `DEFAULT_OUTPUT_TOKENS` when the step sets none. Reserved before the call, settled with the real usage after.
- `observe`: the headers providers send (OpenAI's `x-ratelimit-remaining-requests` / `-tokens` and
  `x-ratelimit-reset-*`, Anthropic's `anthropic-ratelimit-*`, `retry-after` / `retry-after-ms`) as an
  `Observation` the limiter tightens its buckets with when the provider knows better.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from worker.steps.http_wire import parse_retry_after
from worker.steps.providers import ChatRequest

DEFAULT_OUTPUT_TOKENS = 1024
"""Output tokens reserved for a call that sets no `max_tokens` (Anthropic's own default here)."""
CHARS_PER_TOKEN = 4
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def estimate_tokens(request: ChatRequest) -> int:
    """Prompt characters / 4 (messages, tool calls and tool schemas), plus the output the call may produce."""
    chars = 0
    for message in request.messages:
        content = message.get("content")
        chars += len(content) if isinstance(content, str) else len(json.dumps(content or ""))
        for call in message.get("tool_calls") or ():
            chars += len(json.dumps(call.get("arguments") or {})) + len(str(call.get("name") or ""))
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    if request.schema is not None:
        chars += len(json.dumps(request.schema))
    output = request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_TOKENS
    return chars // CHARS_PER_TOKEN + 4 * len(request.messages) + max(0, output)


@dataclass(frozen=True, slots=True)
class Observation:
    """What the provider said about its limits in one answer (-1 / None: it did not say)."""

    remaining_requests: float = -1.0
    remaining_tokens: float = -1.0
    retry_after: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None


def _duration(value: str | None) -> float | None:
    """OpenAI's reset format: `1s`, `6m0s`, `20ms`, `1h2m3.5s`; a bare number is seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _until(value: str | None, now: datetime) -> float | None:
    """Anthropic's reset format: an RFC 3339 time."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _number(value: str | None) -> float:
    if value is None:
        return -1.0
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return -1.0


def observe(headers: Mapping[str, str], now: datetime) -> Observation:
    """The provider's own view of its limits, from one answer's headers (names in any case)."""
    h = {k.lower(): v for k, v in headers.items()}
    retry = parse_retry_after(h.get("retry-after"))
    if h.get("retry-after-ms"):
        ms = _number(h["retry-after-ms"])
        retry = ms / 1000 if ms >= 0 else retry
    if any(k.startswith("anthropic-ratelimit-") for k in h):
        tokens = [_number(h.get(f"anthropic-ratelimit-{kind}-remaining"))
                  for kind in ("tokens", "input-tokens", "output-tokens")]
        told = [t for t in tokens if t >= 0]
        resets = [_until(h.get(f"anthropic-ratelimit-{kind}-reset"), now)
                  for kind in ("tokens", "input-tokens", "output-tokens")]
        return Observation(_number(h.get("anthropic-ratelimit-requests-remaining")), min(told) if told else -1.0,
                           retry, _until(h.get("anthropic-ratelimit-requests-reset"), now),
                           max((r for r in resets if r is not None), default=None))
    return Observation(_number(h.get("x-ratelimit-remaining-requests")), _number(h.get("x-ratelimit-remaining-tokens")),
                       retry, _duration(h.get("x-ratelimit-reset-requests")),
                       _duration(h.get("x-ratelimit-reset-tokens")))
