"""A notification receiver for tests: a real HTTP server on 127.0.0.1 in a background thread.

It verifies every request's signature with the secret it is given (`worker.notify.payloads.verify`, as a
receiver would), records it, and deduplicates by `X-Notification-Id` the way a receiver should. It can be stopped
and started again on the same port (a receiver that is down for a while), and it can hold requests open (a
delivery in flight when its worker is killed).

    with NotifyReceiver(secret="s") as rx:
        ...  # notify.yaml targets rx.url
        assert rx.wait_for(lambda r: {"task.created"} <= r.kinds(), 20)
        assert all(d.verified for d in rx.deliveries)
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from worker.notify.payloads import verify


@dataclass(frozen=True, slots=True)
class Delivery:
    notification_id: str
    kind: str
    path: str
    headers: dict[str, str]  # lowercase names
    body: bytes
    doc: dict[str, Any] | None  # the parsed body (None when it did not verify)
    verified: bool
    error: str | None
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a sender that went away mid-request (killed, or closing a kept-alive connection)


class NotifyReceiver:
    def __init__(self, secret: str | None = None, port: int = 0) -> None:
        self.secret = secret
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Condition()
        self.deliveries: list[Delivery] = []
        self._hold = 0  # hold this many more requests open (until released)
        self._release = threading.Event()
        self.held = 0  # requests being held right now
        self._status: list[int] = []  # answer the next requests with these statuses
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()  # connections being served (closed by `stop`)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> NotifyReceiver:
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), _handler(self))
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                            name="notify-receiver", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until `start()` again."""
        server, self._server = self._server, None
        if server is not None:
            self._release.set()
            server.shutdown()
            server.server_close()
            with self._lock:
                for conn in list(self._open):  # kept-alive connections too: down is down
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            if self._thread is not None:
                self._thread.join(timeout=5)

    def __enter__(self) -> NotifyReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- behaviour ---------------------------------------------------------------------------
    def hold_next(self, n: int = 1) -> None:
        """Keep the next `n` requests open (recorded on arrival, never answered until `release()`)."""
        with self._lock:
            self._hold = n
            self._release.clear()

    def release(self) -> None:
        self._release.set()

    def answer_next(self, *statuses: int) -> None:
        with self._lock:
            self._status = list(statuses)

    # -- inspection ----------------------------------------------------------------------------
    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def ids(self) -> set[str]:
        """Distinct notification ids received (what a deduplicating receiver acts on once each)."""
        return {d.notification_id for d in self.snapshot()}

    def kinds(self) -> set[str]:
        return {d.kind for d in self.snapshot()}

    def of_kind(self, kind: str) -> list[Delivery]:
        return [d for d in self.snapshot() if d.kind == kind]

    def wait_for(self, predicate: Callable[[NotifyReceiver], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))
            return True

    async def wait_for_async(self, predicate: Callable[[NotifyReceiver], bool], timeout: float) -> bool:
        import asyncio

        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- the handler thread ---------------------------------------------------------------------
    def _record(self, delivery: Delivery) -> tuple[bool, int]:
        with self._lock:
            self.deliveries.append(delivery)
            hold = self._hold > 0
            if hold:
                self._hold -= 1
                self.held += 1
            status = self._status.pop(0) if self._status else 200
            self._lock.notify_all()
            return hold, status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _handler(rx: NotifyReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def setup(self) -> None:
            super().setup()
            # answer at once (no Nagle delay between the headers and the body, as uvicorn or any tuned server)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with rx._lock:
                rx._open.add(self.connection)

        def finish(self) -> None:
            with rx._lock:
                rx._open.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            doc: dict[str, Any] | None = None
            error = None
            try:
                doc = verify(rx.secret, body, headers) if rx.secret else json.loads(body)
            except ValueError as exc:
                error = str(exc)
            delivery = Delivery(headers.get("x-notification-id", ""), headers.get("x-notification-kind", ""),
                                self.path, headers, body, doc, doc is not None and rx.secret is not None, error,
                                time.monotonic(), time.time())
            hold, status = rx._record(delivery)
            if rx.secret and doc is None:
                status = 401  # a receiver refuses what it cannot verify
            if hold:
                rx._release.wait(120)
                with rx._lock:
                    rx.held -= 1
            data = b'{"ok": true}' if status < 300 else b'{"ok": false}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the sender is gone (killed mid-delivery)

    return Handler


def notify_yaml(url: str, secret: str, *, give_up_after: str = "1h", expiring_before: str = "2s",
                timeout: str = "2s", extra_targets: str = "", extra_routes: str = "") -> str:
    """A notify.yaml sending every kind to `url` (target `hook`, signed with the Vault secret `secret`),
    retrying fast (200 ms, at most 1 s apart)."""
    return (f"expiring_before: {expiring_before}\n"
            f"give_up_after: {give_up_after}\n"
            "retry: {initial_interval: 200ms, max_interval: 1s}\n"
            "targets:\n"
            f"  hook: {{url: \"{url}\", secret: {secret}, timeout: {timeout}}}\n"
            f"{extra_targets}"
            "routes:\n"
            "  - targets: [hook]\n"
            f"{extra_routes}")
