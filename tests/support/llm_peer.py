"""A scripted LLM API peer: a real HTTP server speaking the OpenAI chat-completions and the Anthropic
Messages wire formats, recording every request (headers, Idempotency-Key, JSON body).

    with LlmPeer() as peer:
        peer.script([Reply(429, {"Retry-After": "1"}, {"error": "slow down"}), openai_text("hi")])
        ... base_url: peer.openai_url (…/v1) or peer.url (Anthropic)
        assert peer.keys() == [...]

Replies are taken from the script in order; when it is empty, `peer.responder(request)` decides
(default: a plain "ok" in the request's format). A reply may be a dict (200 JSON), a `Reply`, or a
callable taking the `LlmRequest` and returning either.

Streaming: a request with `"stream": true` gets its answer as real chunked Server-Sent Events, in the
request's format (OpenAI `chat.completion.chunk`s with tool-call deltas, a usage chunk when
`stream_options.include_usage` asks for it, `[DONE]`; Anthropic's message_start ... message_stop with
`text_delta`/`input_json_delta`), cut from the reply's body: text in word-sized pieces, tool arguments in
8-character pieces. `peer.tokens_per_s` paces the pieces (None: as fast as the socket takes them);
`Reply(drop_after=N)` closes the connection after N pieces (no end marker, no final chunk);
`Reply(stream=False)` or `peer.streaming = False` answers plain JSON anyway (a peer that cannot stream);
`peer.refuse_stream = True` answers stream requests with a 400 about streaming. `peer.first_pieces` holds,
per streamed answer, the monotonic time its first piece was written.

`peer.limit(requests=20, tokens=2000, per=1.0)` makes the peer enforce its own rate limits as providers do:
token buckets that start full and refill continuously, a request costing one request and the tokens of its
answer's `usage`. A request over a limit gets a 429 with the real headers (`retry-after`, `retry-after-ms`,
`x-ratelimit-*`, or `anthropic-ratelimit-*` on the Messages API); every answer carries the remaining counts.
`peer.rejections` lists the requests it refused, `peer.accepted` when it accepted the others (monotonic).
"""

from __future__ import annotations

import http.server
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.llm_sse import anthropic_events, openai_events


@dataclass(frozen=True, slots=True)
class LlmRequest:
    path: str
    headers: dict[str, str]  # lowercased names
    body: Any  # parsed JSON (None if it was not JSON)
    at: float

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def anthropic(self) -> bool:
        return self.path.endswith("/messages")

    def tool_results(self) -> list[str]:
        """Contents of the tool results in the conversation so far, in order (either format)."""
        out: list[str] = []
        for m in (self.body or {}).get("messages", []):
            if m.get("role") == "tool":
                out.append(str(m.get("content")))
            elif isinstance(m.get("content"), list):
                out += [str(b.get("content")) for b in m["content"] if b.get("type") == "tool_result"]
        return out


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # dict/list: JSON; str/bytes: raw
    delay: float = 0.0
    drop_after: int | None = None  # a streamed answer: close the connection after this many pieces
    stream: bool | None = None  # False: plain JSON even when the request asks for a stream


Script = dict[str, Any] | Reply | Callable[[LlmRequest], "dict[str, Any] | Reply"]


def openai_text(text: str, *, model: str = "peer-model", usage: tuple[int, int] = (10, 5),
                finish_reason: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def openai_tool_calls(calls: list[tuple[str, dict[str, Any]]], *, model: str = "peer-model",
                      usage: tuple[int, int] = (20, 8), call_ids: list[str] | None = None) -> dict[str, Any]:
    tool_calls = [{"id": (call_ids or [])[i] if call_ids else f"call_{i}", "type": "function",
                   "function": {"name": name, "arguments": json.dumps(args)}} for i, (name, args) in enumerate(calls)]
    return {"id": "chatcmpl-2", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                         "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def anthropic_text(text: str, *, model: str = "peer-claude", usage: tuple[int, int] = (12, 6)) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def anthropic_tool_use(calls: list[tuple[str, dict[str, Any]]], *, model: str = "peer-claude",
                       usage: tuple[int, int] = (30, 9)) -> dict[str, Any]:
    return {"id": "msg_2", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
                        for i, (n, a) in enumerate(calls)],
            "stop_reason": "tool_use", "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def _default(request: LlmRequest) -> dict[str, Any]:
    return anthropic_text("ok") if request.anthropic else openai_text("ok")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class _Bucket:
    """A provider's bucket: `amount` per `per` seconds, full at the start, refilled continuously."""

    def __init__(self, amount: float, per: float) -> None:
        self.amount, self.rate = amount, amount / per
        self.level, self.at = amount, time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.amount, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, cost: float) -> float:
        return max(0.0, (min(cost, self.amount) - self.level) / self.rate)

    def reset(self) -> float:
        """Seconds until full again (OpenAI's x-ratelimit-reset-*)."""
        return (self.amount - self.level) / self.rate


def _usage_tokens(body: Any) -> int:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0
    return int(usage.get("total_tokens") or (usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
               + (usage.get("completion_tokens") or usage.get("output_tokens") or 0))


def _rate_headers(request: LlmRequest, buckets: dict[str, _Bucket], now: float) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, bucket in buckets.items():
        if request.anthropic:
            reset = datetime.fromtimestamp(time.time() + bucket.reset(), UTC).isoformat().replace("+00:00", "Z")
            out |= {f"anthropic-ratelimit-{kind}-limit": str(int(bucket.amount)),
                    f"anthropic-ratelimit-{kind}-remaining": str(max(0, int(bucket.level))),
                    f"anthropic-ratelimit-{kind}-reset": reset}
        else:
            out |= {f"x-ratelimit-limit-{kind}": str(int(bucket.amount)),
                    f"x-ratelimit-remaining-{kind}": str(max(0, int(bucket.level))),
                    f"x-ratelimit-reset-{kind}": f"{bucket.reset() * 1000:.0f}ms"}
    return out


class LlmPeer:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._requests: list[LlmRequest] = []
        self._script: deque[Script] = deque()
        self.responder: Callable[[LlmRequest], dict[str, Any] | Reply] = _default
        self._server: _Server | None = None
        self.url = ""
        self._buckets: dict[str, _Bucket] = {}
        self.rejections: list[LlmRequest] = []
        self.accepted: list[float] = []
        self.tokens_per_s: float | None = None
        self.streaming = True
        self.refuse_stream = False
        self.first_pieces: list[float] = []

    def limit(self, *, requests: float | None = None, tokens: float | None = None, per: float = 60.0) -> None:
        """Enforce a request and/or token rate (`amount` per `per` seconds); buckets start full."""
        with self._lock:
            self._buckets = {}
            if requests is not None:
                self._buckets["requests"] = _Bucket(requests, per)
            if tokens is not None:
                self._buckets["tokens"] = _Bucket(tokens, per)

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> LlmPeer:
        server = _Server(("127.0.0.1", 0), _handler(self))
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True,
                         name="llm-peer").start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> LlmPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, replies: list[Script]) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[LlmRequest]:
        with self._lock:
            return list(self._requests)

    def keys(self) -> list[str | None]:
        return [r.key for r in self.requests]

    def wait_for(self, predicate: Callable[[LlmPeer], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return True

    def _answer(self, request: LlmRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            scripted = bool(self._script)
            original: Script = self._script.popleft() if scripted else self.responder
        item = original
        while callable(item) and not isinstance(item, Reply | dict):
            item = item(request)
        reply = item if isinstance(item, Reply) else Reply(200, {}, item)
        if not self._buckets or reply.status != 200:
            return reply
        with self._lock:
            now = time.monotonic()
            costs = {"requests": 1.0, "tokens": float(_usage_tokens(reply.body))}
            for bucket in self._buckets.values():
                bucket.refill(now)
            waits = {kind: b.wait_for(costs[kind]) for kind, b in self._buckets.items()}
            if any(waits.values()):
                self.rejections.append(request)
                if scripted:
                    self._script.appendleft(original)  # the scripted answer is for the request that gets through
                wait = max(waits.values())
                over = ", ".join(kind for kind, w in waits.items() if w)
                return Reply(429, {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": f"{wait * 1000:.0f}",
                                   **_rate_headers(request, self._buckets, now)},
                             {"error": {"type": "rate_limit_error", "message": f"Rate limit reached for {over}"}})
            for kind, bucket in self._buckets.items():
                bucket.level -= costs[kind]
            self.accepted.append(now)
            return Reply(reply.status, {**_rate_headers(request, self._buckets, now), **reply.headers}, reply.body,
                         reply.delay, reply.drop_after, reply.stream)


def _stream_events(request: LlmRequest, reply: Reply) -> list[tuple[bytes, bool]] | None:
    """The reply as a stream when the request asks for one and the reply is an answer; else None."""
    if not (isinstance(request.body, dict) and request.body.get("stream") is True) or reply.stream is False:
        return None
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    try:
        if request.anthropic:
            return anthropic_events(reply.body)
        options = request.body.get("stream_options") or {}
        return openai_events(reply.body, include_usage=bool(options.get("include_usage")))
    except (KeyError, IndexError, TypeError):
        return None  # not an answer's shape (a malformed-reply test): sent as it is


def _handler(peer: LlmPeer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers, then each piece of a stream, leave in separate writes: without TCP_NODELAY each one after the
        # first waits for the client's delayed ACK (~40 ms), which real providers do not make anyone wait
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = LlmRequest(self.path.split("?", 1)[0], {k.lower(): v for k, v in self.headers.items()},
                                 body, time.monotonic())
            wants_stream = isinstance(body, dict) and body.get("stream") is True
            if wants_stream and peer.refuse_stream:
                with peer._lock:
                    peer._requests.append(request)
                    peer._lock.notify_all()
                reply = Reply(400, {}, {"error": {"type": "invalid_request_error",
                                                  "message": "stream: streaming is not supported for this model"}})
            else:
                reply = peer._answer(request)
            if reply.delay:
                time.sleep(reply.delay)
            events = _stream_events(request, reply) if peer.streaming else None
            try:
                if events is not None:
                    self._stream(reply, events)
                    return
                self._plain(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _plain(self, reply: Reply) -> None:
            if isinstance(reply.body, dict | list):
                data, ctype = json.dumps(reply.body).encode(), "application/json"
            else:
                data = reply.body.encode() if isinstance(reply.body, str) else (reply.body or b"")
                ctype = "application/json"
            self.send_response(reply.status)
            self.send_header("Content-Type", ctype)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Reply, events: list[tuple[bytes, bool]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            pause = 1.0 / peer.tokens_per_s if peer.tokens_per_s else 0.0
            pieces = 0
            for data, piece in events:
                if piece:
                    if reply.drop_after is not None and pieces >= reply.drop_after:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)  # mid-answer: no end marker, no last chunk
                        return
                    if pieces and pause:
                        time.sleep(pause)
                    pieces += 1
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                if piece and pieces == 1:
                    with peer._lock:
                        peer.first_pieces.append(time.monotonic())
            self.wfile.write(b"0\r\n\r\n")

    return Handler


def step_context(settings: Any = None, *, step_id: str = "s", journal: Any = None,
                 decisions: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None,
                 timeout: float | None = None, run_id: str = "run-1") -> Any:
    """A StepContext built by hand for calling an executor directly."""
    import logging

    from worker.config import Settings
    from worker.steps.base import StepContext, idempotency_key

    return StepContext(
        run_id=run_id, workflow="wf", step_id=step_id, item=None, attempt=1,  # type: ignore[arg-type]
        idempotency_key=idempotency_key(run_id, step_id, None), timeout=timeout,
        settings=settings or Settings(http_allowed_hosts=("127.0.0.1",)), logger=logging.getLogger("test"),
        journal=journal, decisions=decisions or {}, secrets=secrets or {})


class MemoryJournal:
    """An in-memory `Journal` for tests; `recorded` lists the indices in commit order."""

    def __init__(self, entries: dict[int, Any] | None = None) -> None:
        self.entries: dict[int, Any] = dict(entries or {})
        self.recorded: list[int] = []

    async def record(self, call_index: int, data: Any) -> None:
        self.entries[call_index] = json.loads(json.dumps(data))  # what a round trip through Postgres gives
        self.recorded.append(call_index)
