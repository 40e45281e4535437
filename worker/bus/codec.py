"""Encoding of stream entries (flat string fields; the payload is compact JSON)."""

from __future__ import annotations

from typing import Any

import orjson

from worker.models import LiveEvent, RunId


def encode_event(kind: str, type_: str, run_id: str | None, data: dict[str, Any]) -> dict[str, bytes]:
    return {
        "kind": kind.encode(),
        "type": type_.encode(),
        "run": (run_id or "").encode(),
        "data": orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
    }


def decode_event(stream_id: bytes | str, fields: dict[bytes, bytes]) -> LiveEvent:
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    run = fields.get(b"run", b"").decode()
    try:
        data = orjson.loads(fields.get(b"data", b"{}"))
    except orjson.JSONDecodeError:
        data = {}
    return LiveEvent(kind=fields.get(b"kind", b"").decode(), type=fields.get(b"type", b"").decode(),
                     run_id=RunId(run) if run else None, data=data, stream_id=sid)
