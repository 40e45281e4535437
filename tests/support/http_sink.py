"""An idempotency-checking HTTP sink: a real HTTP server on 127.0.0.1 in a background thread.

Worker subprocesses call it like any callee; tests then ask how many requests arrived, with which
Idempotency-Key, and how many *distinct effects* that makes (one per key).

    with HttpSink() as sink:
        sink.script("/pay", [(503, {"Retry-After": "1"}, "busy"), (200, {}, {"paid": True})])
        ...
        assert sink.distinct_effects("/pay") == 1

A scripted `Transfer-Encoding: chunked` header sends the body in chunks without a Content-Length.
A scripted status of 0 closes the connection without answering (a callee that crashed mid-request).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

ScriptedResponse = tuple[int, dict[str, str], bytes | str | dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lowercased names
    body: bytes
    idempotency_key: str | None
    at: float  # time.monotonic() on arrival
    query: str = ""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients (worker pools) must not hit SYN retries


class HttpSink:
    """A recording HTTP server; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[ScriptedResponse]] = {}
        self._delays: dict[str, float] = {}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> HttpSink:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="http-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HttpSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- configuration ----------------------------------------------------------------------

    def script(self, path: str, responses: list[ScriptedResponse]) -> None:
        """Serve `responses` in order to requests for `path`, then the default response."""
        with self._lock:
            self._scripts[path] = deque(responses)

    def set_delay(self, path: str, seconds: float) -> None:
        """Sleep this long before answering requests for `path` (a slow callee)."""
        with self._lock:
            self._delays[path] = seconds

    def clear(self) -> None:
        """Forget recorded requests, scripts and delays."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
            self._delays.clear()

    # -- inspection -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, oldest first."""
        return self.snapshot()

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def _select(self, path: str | None) -> list[RecordedRequest]:
        return [r for r in self.snapshot() if path is None or r.path == path]

    def count(self, path: str | None = None) -> int:
        return len(self._select(path))

    def keys(self, path: str | None = None) -> list[str]:
        """The Idempotency-Key of every request that had one, in arrival order (with repeats)."""
        return [r.idempotency_key for r in self._select(path) if r.idempotency_key is not None]

    def distinct_effects(self, path: str | None = None) -> int:
        """Distinct keys; each request without a key counts as an effect of its own."""
        selected = self._select(path)
        keyed = {r.idempotency_key for r in selected if r.idempotency_key is not None}
        return len(keyed) + sum(1 for r in selected if r.idempotency_key is None)

    def duplicate_requests(self, path: str | None = None) -> int:
        """Requests whose key had already been seen (the callee must deduplicate these)."""
        selected = self._select(path)
        return len(selected) - self.distinct_effects(path) if selected else 0

    def wait_for(self, predicate: Callable[[HttpSink], bool], timeout: float) -> bool:
        """Block until `predicate(self)` is true (re-checked on each request); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if predicate(self):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))

    async def wait_for_async(self, predicate: Callable[[HttpSink], bool], seconds: float) -> bool:
        """`wait_for` for async tests: polls without blocking the event loop."""
        deadline = time.monotonic() + seconds
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- used by the handler thread ---------------------------------------------------------

    def _record(self, request: RecordedRequest) -> tuple[ScriptedResponse | None, float, int]:
        with self._lock:
            self._requests.append(request)
            queue = self._scripts.get(request.path)
            scripted = queue.popleft() if queue else None
            n = sum(1 for r in self._requests if r.idempotency_key == request.idempotency_key)
            self._lock.notify_all()
            return scripted, self._delays.get(request.path, 0.0), n


def _make_handler(sink: HttpSink) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return None

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            parts = urlsplit(self.path)
            recorded = RecordedRequest(
                method=self.command,
                path=parts.path,
                headers=headers,
                body=body,
                idempotency_key=headers.get("idempotency-key"),
                at=time.monotonic(),
                query=parts.query,
            )
            scripted, delay, n = sink._record(recorded)
            if delay > 0:
                time.sleep(delay)
            if scripted is None:
                status, extra = 200, dict[str, str]()
                payload: bytes | str | dict[str, Any] = {
                    "ok": True,
                    "path": recorded.path,
                    "key": recorded.idempotency_key,
                    "n": n,
                }
            else:
                status, extra, payload = scripted
            if status == 0:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self._respond(status, extra, payload)

        def _respond(self, status: int, extra: dict[str, str], payload: bytes | str | dict[str, Any]) -> None:
            if isinstance(payload, dict):
                data, content_type = json.dumps(payload).encode(), "application/json"
            elif isinstance(payload, str):
                data, content_type = payload.encode(), "text/plain; charset=utf-8"
            else:
                data, content_type = payload, "application/octet-stream"
            names = {k.lower() for k in extra}
            chunked = extra.get("Transfer-Encoding", extra.get("transfer-encoding", "")).lower() == "chunked"
            self.send_response(status)
            if "content-type" not in names:
                self.send_header("Content-Type", content_type)
            if "content-length" not in names and not chunked:
                self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            with contextlib.suppress(OSError):  # the client may have given up (timeout tests)
                if not chunked:
                    self.wfile.write(data)
                    return
                for start in range(0, len(data), 8192):  # no length announced: the client must count
                    piece = data[start : start + 8192]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle  # noqa: N815

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError, TimeoutError):
                super().handle()

    return Handler
