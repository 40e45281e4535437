"""Request bodies are bounded: a body over the limit is refused with 413 before it is read whole."""

from __future__ import annotations

from typing import Any

import orjson

from worker.api.errors import error_body

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimit:
    """ASGI middleware: `Content-Length` over `max_bytes` is refused at once; a body sent without a length
    (chunked) is counted as it arrives and refused when it passes the limit. Streaming responses (SSE) are
    untouched: only the request body is read ahead."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(send, 400, "Content-Length is not a number")
                    return
                if length > self.max_bytes:
                    await self._refuse(send, 413, self._message())
                    return
        # read the whole body first (it is bounded), so that an oversized one is refused before any handler runs
        body = bytearray()
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send, 413, self._message())
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (AGENTRT_API_MAX_BODY)"

    @staticmethod
    async def _refuse(send: Any, status: int, message: str) -> None:
        body = orjson.dumps(error_body(status, message))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
