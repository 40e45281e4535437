"""The streaming side of the LLM wire peer (tests/support/llm_peer.py): an answer cut into the Server-Sent Events
a provider streams it as, each with whether it carries a piece of the answer (what pacing and `drop_after`
count)."""

from __future__ import annotations

import json
import re
from typing import Any


def _pieces(text: str) -> list[str]:
    """Word-sized pieces (a word with the spaces before it), long words in 6-character parts."""
    out: list[str] = []
    for word in re.findall(r"\s*\S+|\s+", text):
        out += [word[i:i + 6] for i in range(0, len(word), 6)]
    return out


def _args_pieces(arguments: str) -> list[str]:
    return [arguments[i:i + 8] for i in range(0, len(arguments), 8)]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n").encode()


def openai_events(body: dict[str, Any], *, include_usage: bool) -> list[tuple[bytes, bool]]:
    """A chat.completion as the chunks of its stream: (event bytes, is a piece of the answer)."""
    choice = body["choices"][0]
    message = choice["message"]
    base = {"id": body.get("id", "chatcmpl-s"), "object": "chat.completion.chunk", "created": 0,
            "model": body.get("model")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [(chunk({"role": "assistant", "content": ""}), False)]
    out += [(chunk({"content": piece}), True) for piece in _pieces(message.get("content") or "")]
    for i, call in enumerate(message.get("tool_calls") or []):
        out.append((chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"], "arguments": ""}}]}), True))
        out += [(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}), True)
                for piece in _args_pieces(call["function"].get("arguments") or "")]
    out.append((chunk({}, choice.get("finish_reason")), False))
    if include_usage and body.get("usage") is not None:
        out.append((_sse({**base, "choices": [], "usage": body["usage"]}), False))
    out.append((_sse("[DONE]"), False))
    return out


def anthropic_events(body: dict[str, Any]) -> list[tuple[bytes, bool]]:
    """A Messages API answer as its event stream."""
    usage = body.get("usage") or {}
    start = {k: v for k, v in body.items() if k not in ("content", "stop_reason", "usage")}
    out = [(_sse({"type": "message_start", "message": {**start, "content": [], "stop_reason": None,
                                                       "usage": {"input_tokens": usage.get("input_tokens", 0),
                                                                 "output_tokens": 1}}}, "message_start"), False),
           (_sse({"type": "ping"}, "ping"), False)]
    for index, block in enumerate(body["content"]):
        if block["type"] == "text":
            out.append((_sse({"type": "content_block_start", "index": index,
                              "content_block": {"type": "text", "text": ""}}, "content_block_start"), False))
            out += [(_sse({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": piece}}, "content_block_delta"), True)
                    for piece in _pieces(block["text"])]
        else:
            out.append((_sse({"type": "content_block_start", "index": index,
                              "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                                "input": {}}}, "content_block_start"), True))
            out += [(_sse({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}, "content_block_delta"), True)
                    for piece in _args_pieces(json.dumps(block.get("input") or {}))]
        out.append((_sse({"type": "content_block_stop", "index": index}, "content_block_stop"), False))
    out.append((_sse({"type": "message_delta", "delta": {"stop_reason": body.get("stop_reason"),
                                                         "stop_sequence": None},
                      "usage": {"output_tokens": usage.get("output_tokens", 0)}}, "message_delta"), False))
    out.append((_sse({"type": "message_stop"}, "message_stop"), False))
    return out
