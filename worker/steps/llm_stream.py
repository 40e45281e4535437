"""Streaming LLM calls: one request with streaming on, its Server-Sent Events folded by the provider's
accumulator into the body the plain call would have answered (so the result is the same), each piece
handed to the call's live writer (worker/streams) as it arrives. Also the call's timing and its GenAI span
attributes.

`stream_call` answers either the assembled body (a dict) or, when the peer answered without a stream (plain
JSON, or an error status), the `httpx.Response`, read, for the plain path to handle as it always has. An
error that says the peer cannot stream raises `NoStream`: the caller makes the plain call instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from worker.errors import StepFailed
from worker.steps.providers import (
    ChatRequest,
    Delta,
    MalformedResponse,
    Provider,
    StreamAccumulator,
    StreamError,
    ToolDelta,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from worker.streams.call import LiveCall

NO_STREAM_STATUSES = frozenset({400, 404, 405, 415, 422, 501})
"""Statuses whose body, when it talks about streaming, means "this model/server does not stream"."""


class NoStream(Exception):
    """The peer refused the streaming request because of the streaming itself."""


@dataclass(slots=True)
class CallTiming:
    """When one LLM call was sent, when its first piece arrived (streamed calls) and when it ended."""

    started: float = field(default_factory=time.monotonic)
    first_at: float | None = None
    ended: float | None = None
    streamed: bool = False

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_at is None else round((self.first_at - self.started) * 1000, 3)

    def tokens_per_s(self, output_tokens: int) -> float | None:
        """Output tokens per second while the answer was being written (after its first piece)."""
        if not self.streamed or self.first_at is None or self.ended is None or output_tokens <= 0:
            return None
        seconds = self.ended - self.first_at
        return round(output_tokens / seconds, 3) if seconds > 0 else None


@dataclass(slots=True)
class LlmCall:
    """One LLM call as `LlmClient.complete` makes it: whether it streams, its live writer, its timing."""

    stream: bool
    live: LiveCall | None
    timing: CallTiming


class AttemptFigures:
    """The streamed calls of each attempt summed up, for the attempt's and the step's spans: the first call's
    time to first token, and the output rate over all of them (an agent makes several calls)."""

    KEPT = 1000

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str, int | None, int], dict[str, float]] = {}

    def add(self, key: tuple[str, str, int | None, int], timing: CallTiming, output_tokens: int) -> dict[str, Any]:
        totals = self._totals.pop(key, None) or {"calls": 0.0, "tokens": 0.0, "seconds": 0.0}
        self._totals[key] = totals  # the newest last: the oldest attempts are forgotten first
        while len(self._totals) > self.KEPT:
            self._totals.pop(next(iter(self._totals)))
        totals["calls"] += 1
        if "ttft_ms" not in totals and timing.ttft_ms is not None:
            totals["ttft_ms"] = timing.ttft_ms
        if timing.first_at is not None and timing.ended is not None:
            totals["tokens"] += output_tokens
            totals["seconds"] += timing.ended - timing.first_at
        attrs: dict[str, Any] = {"agentrt.llm.streamed_calls": int(totals["calls"])}
        if "ttft_ms" in totals:
            attrs["agentrt.llm.ttft_ms"] = totals["ttft_ms"]
            attrs["gen_ai.response.time_to_first_chunk"] = round(totals["ttft_ms"] / 1000, 6)
        if totals["tokens"] > 0 and totals["seconds"] > 0:
            attrs["agentrt.llm.output_tokens_per_s"] = round(totals["tokens"] / totals["seconds"], 3)
        return attrs


async def sse_events(response: httpx.Response, cap: int) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) of each Server-Sent Event. One event larger than `cap` characters is a final failure
    (the framing of a long answer is not: `stream_call` caps the answer itself, as the plain call's body is)."""
    event: str | None = None
    data: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data, size = None, [], 0
            continue
        size += len(line)
        if size > cap:
            raise StepFailed(f"a streamed event larger than {cap} bytes", retryable=False)
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


async def stream_call(client: httpx.AsyncClient, provider: Provider, url: str, safe_url: str, body: dict[str, Any],
                      headers: dict[str, str], query: dict[str, str] | None, seconds: float, *, cap: int,
                      live: LiveCall | None, timing: CallTiming,
                      seen: list[httpx.Response] | None) -> dict[str, Any] | httpx.Response:
    answered = False
    accumulator: StreamAccumulator | None = None
    size = 0  # of the answer (text and tool arguments) so far: the plain call's body is capped, so is this
    try:
        async with client.stream("POST", url, json=provider.stream_body(body), headers=headers, params=query,
                                 timeout=httpx.Timeout(seconds)) as response:
            answered = True
            if seen is not None:
                seen.append(response)
            kind = response.headers.get("content-type", "").lower()
            if response.status_code >= 300 or "text/event-stream" not in kind:
                await response.aread()
                if response.status_code in NO_STREAM_STATUSES and b"stream" in response.content.lower():
                    raise NoStream(f"HTTP {response.status_code}")
                return response
            timing.streamed = True
            accumulator = provider.accumulator()
            async for event, data in sse_events(response, cap):
                if accumulator.finished:
                    continue  # nothing follows the end marker; read on so that the connection can be reused
                delta = _feed(provider, accumulator, event, data, safe_url)
                if delta is not None:
                    if timing.first_at is None:
                        timing.first_at = time.monotonic()
                    size += len(delta.text) + sum(len(t.arguments) for t in delta.tools)
                    if size > cap:
                        raise StepFailed(f"{provider.name}: response larger than {cap} bytes", retryable=False)
                    if live is not None:
                        live.add(delta)
                if accumulator.finished:
                    timing.ended = time.monotonic()
    except httpx.TimeoutException as exc:
        if accumulator is None or not accumulator.finished:  # else: a peer that kept the stream open after its end
            raise StepFailed(f"{provider.name}: timed out after {seconds:g}s (POST {safe_url})",
                             retryable=True) from exc
    except httpx.TransportError as exc:
        if answered:
            raise StepFailed(f"{provider.name}: the stream from POST {safe_url} broke off: {type(exc).__name__}: "
                             f"{exc}", retryable=True) from exc
        raise StepFailed(f"{provider.name}: cannot reach {safe_url}: {type(exc).__name__}: {exc}",
                         retryable=True) from exc
    assert accumulator is not None
    timing.ended = timing.ended or time.monotonic()
    if not accumulator.ended():
        raise StepFailed(f"{provider.name}: the stream from POST {safe_url} ended before the answer did",
                         retryable=True)
    try:
        return accumulator.body()
    except MalformedResponse as exc:
        raise StepFailed(f"{provider.name}: {exc}", retryable=True) from exc


def _feed(provider: Provider, accumulator: StreamAccumulator, event: str | None, data: str,
          safe_url: str) -> Delta | None:
    try:
        return accumulator.feed(event, data)
    except MalformedResponse as exc:
        raise StepFailed(f"{provider.name}: {exc}", retryable=True) from exc
    except StreamError as exc:
        raise StepFailed(f"{provider.name}: error in the stream from POST {safe_url}: {exc}", retryable=True) from exc


def whole_answer(result: dict[str, Any]) -> Delta:
    """A plain answer as one delta (for the live channel, when the peer did not stream)."""
    return Delta(text=str(result.get("text") or ""),
                 tools=[ToolDelta(i, str(c["id"]), str(c["name"]), json.dumps(c["arguments"]))
                        for i, c in enumerate(result.get("tool_calls") or [])])


def chat_attributes(provider: Provider, request: ChatRequest, url: str, turn: int) -> dict[str, Any]:
    """The GenAI semantic conventions' inference span attributes known before the call."""
    parsed = httpx.URL(url)
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider.name,
                             "gen_ai.request.model": request.model, "server.address": parsed.host,
                             "server.port": parsed.port or (443 if parsed.scheme == "https" else 80),
                             "agentrt.llm.turn": turn}
    if request.max_tokens is not None:
        attrs["gen_ai.request.max_tokens"] = request.max_tokens
    if request.temperature is not None:
        attrs["gen_ai.request.temperature"] = request.temperature
    return attrs


def result_attributes(result: dict[str, Any], timing: CallTiming) -> dict[str, Any]:
    """What the call measured: tokens, finish reason, and for a streamed call the time to first token and
    the output rate (`gen_ai.response.time_to_first_chunk` is in seconds, as the conventions say)."""
    usage = result.get("usage") or {}
    output = int(usage.get("output_tokens") or 0)
    attrs: dict[str, Any] = {"gen_ai.usage.input_tokens": int(usage.get("input_tokens") or 0),
                             "gen_ai.usage.output_tokens": output, "agentrt.llm.streamed": timing.streamed}
    if result.get("model"):
        attrs["gen_ai.response.model"] = str(result["model"])
    if result.get("finish_reason"):
        attrs["gen_ai.response.finish_reasons"] = [str(result["finish_reason"])]
    if timing.ttft_ms is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = round(timing.ttft_ms / 1000, 6)
        attrs["agentrt.llm.ttft_ms"] = timing.ttft_ms
    rate = timing.tokens_per_s(output)
    if rate is not None:
        attrs["agentrt.llm.output_tokens_per_s"] = rate
    return attrs


def record(span: Span, attributes: dict[str, Any]) -> None:
    if span.is_recording():
        span.set_attributes(attributes)
