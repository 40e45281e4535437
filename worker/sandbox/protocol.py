"""The pipe protocol between the worker and a sandbox process: length-prefixed orjson frames.

A frame is a 4-byte big-endian length followed by that many bytes of JSON (one object with a `t`
field). The worker sends `config` once, then one `call` per step, each with an `id` unique to that
sandbox (several may be in flight: async functions share a sandbox), and `cancel` with a call's `id`
when the step times out; the sandbox answers `ready` once, then, per call, any number of `log` frames
(with the call's `id`) and exactly one `result` or `error` with the call's `id` (a cancelled call too).

Only stdlib and orjson here: the sandbox imports this before it applies its limits.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a frame larger than this is a protocol violation (the sandbox is killed)


def call_frame_with_id(payload: bytes, call_id: int) -> bytes:
    """The frame of a call whose JSON object `payload` (encoded once by the caller) gets `"id": call_id`
    as its first member."""
    body = b'{"id":%d,' % call_id + payload[1:]
    return HEADER.pack(len(body)) + body


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame, as one buffer (written with one write)."""
    payload = orjson.dumps(message)
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into decoded frames; feed it whatever the pipe delivered."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buffer = self._buffer
        buffer += data
        out: list[dict[str, Any]] = []
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes (at most {MAX_FRAME})")
            if end - start - 4 < size:
                break
            try:
                message = orjson.loads(buffer[start + 4:start + 4 + size])
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"frame is not JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise ProtocolError("frame is not a JSON object")
            out.append(message)
            start += 4 + size
        if start:
            del buffer[:start]
        return out
