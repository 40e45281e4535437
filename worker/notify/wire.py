"""A small HTTP/1.1 client for webhook POSTs: asyncio streams, keep-alive connections per origin, TLS.

Why not httpx (used elsewhere): on this 2-core machine httpx spends 1.2-2 ms of CPU per POST (its connection
pool's bookkeeping grows with the connections), this client about 0.1 ms (300 signed POSTs to a local receiver:
360-600 ms of client CPU against 27-29 ms), and one worker delivers a burst of notifications from one process
that also drives runs (bench/README.md, Notifications). What it does:
`POST` with Content-Length, read the status line, the headers and the body (Content-Length, chunked, or until
close; at most 1 MiB is read, the connection is not reused after a larger one), keep the connection when the
server allows. No redirects (a 3xx is an answer like any other), no proxies, no cookies, no ~/.netrc. A kept
connection that the server closed meanwhile is retried once on a new one (a notification is deduplicable).
Error messages never contain the URL.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class WireError(Exception):
    """The request could not be sent or its answer not read (connection, timeout, protocol)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lowercase names."""


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _tls() -> ssl.SSLContext:
    try:
        import certifi  # httpx's CA bundle (a dependency of httpx), the same trust as the other outbound calls

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover
        return ssl.create_default_context()


class PostClient:
    def __init__(self, *, keep_per_origin: int = 32) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._keep = keep_per_origin
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, within: float) -> Answer:
        """POST `body`; the answer's status and headers. WireError when there is none within `within` seconds."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        if scheme not in ("http", "https") or not host:
            raise WireError("not an http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, host, port)
        shown = f"[{host}]" if ":" in host else host
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {target} HTTP/1.1", f"Host: {shown}" + ("" if port in (80, 443) else f":{port}"),
                f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(within):
                for reused in (True, False):
                    conn = self._take(origin) if reused else None
                    if reused and conn is None:
                        continue
                    conn = conn or await self._open(origin)
                    try:
                        answer, keep = await _exchange(conn, request)
                    except _ClosedBeforeAnswer:
                        conn[1].close()
                        if reused:
                            continue  # the server had closed the kept connection: once more on a new one
                        raise WireError("the server closed the connection without answering") from None
                    except BaseException:
                        conn[1].close()
                        raise
                    if keep and len(self._idle.setdefault(origin, [])) < self._keep:
                        self._idle[origin].append(conn)
                    else:
                        conn[1].close()
                    return answer
        except TimeoutError:
            raise WireError(f"no answer within {within:g}s") from None
        except asyncio.IncompleteReadError:
            raise WireError("the connection closed in the middle of the answer") from None
        except (asyncio.LimitOverrunError, ValueError):
            raise WireError("a line of the answer is too long") from None
        except OSError as exc:
            raise WireError(f"{type(exc).__name__}: {exc.strerror or 'connection failed'}") from None
        raise WireError("no connection")  # pragma: no cover - the loop always returns or raises

    def _take(self, origin: tuple[str, str, int]) -> _Conn | None:
        pool = self._idle.get(origin)
        while pool:
            conn = pool.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn
            conn[1].close()
        return None

    async def _open(self, origin: tuple[str, str, int]) -> _Conn:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            self._tls = tls = self._tls or _tls()
        return await asyncio.open_connection(host, port, ssl=tls, limit=MAX_HEADER_BYTES)

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for _reader, writer in pool:
                writer.close()
        self._idle.clear()


class _ClosedBeforeAnswer(Exception):
    pass


async def _exchange(conn: _Conn, request: bytes) -> tuple[Answer, bool]:
    """Send one request, read one answer; (answer, whether the connection may be reused)."""
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            raise _ClosedBeforeAnswer
        try:
            version, code = line.decode("latin-1").split(" ", 2)[:2]
            status = int(code)
        except ValueError:
            raise WireError("not an HTTP answer") from None
        headers = await _headers(reader)
        if status >= 200 or status == 101:
            break  # 1xx interim answers (100 Continue) are skipped
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        keep = await _chunked(reader) and keep
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise WireError("bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            return Answer(status, headers), False
        await reader.readexactly(length)
    else:
        await reader.read(MAX_BODY_BYTES)  # until the server closes
        keep = False
    return Answer(status, headers), keep


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    size = 0
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise WireError("the answer's headers are too large")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def _chunked(reader: asyncio.StreamReader) -> bool:
    """Read a chunked body; False when it was too large to read (the connection is then not reused)."""
    total = 0
    while True:
        size_line = await reader.readline()
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError:
            raise WireError("bad chunk size") from None
        if size == 0:
            await _headers(reader)  # trailers, then the blank line
            return True
        total += size
        if total > MAX_BODY_BYTES:
            return False
        await reader.readexactly(size + 2)
