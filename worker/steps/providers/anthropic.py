"""The Anthropic Messages API wire format."""

from __future__ import annotations

import json
from typing import Any

from worker.steps.providers import (
    ChatRequest,
    Delta,
    MalformedResponse,
    Message,
    StreamError,
    ToolDelta,
    WireRequest,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024  # required by the API


class AnthropicProvider:
    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_key_header = "x-api-key"
    key_hosts: tuple[str, ...] = ("api.anthropic.com",)

    def auth_headers(self, key: str, header: str | None) -> dict[str, str]:
        return {header or "x-api-key": key}

    def build(self, request: ChatRequest) -> WireRequest:
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        if request.schema is not None:
            # No response_format here: ask for the JSON in words; the executor validates it.
            system = (system + "\n\n" if system else "") + (
                "Answer with a single JSON value and nothing else. It must match this JSON schema:\n"
                + json.dumps(request.schema))
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": _messages([m for m in request.messages if m["role"] != "system"]),
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = request.stop
        if request.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                             for t in request.tools]
        # The key goes in a header: Anthropic's metadata.user_id identifies an end user, not a request.
        headers = {"anthropic-version": ANTHROPIC_VERSION, "Idempotency-Key": request.idempotency_key}
        return WireRequest("/v1/messages", headers, body)

    def parse(self, body: Any) -> dict[str, Any]:
        try:
            texts: list[str] = []
            calls: list[dict[str, Any]] = []
            for block in body["content"]:
                if block.get("type") == "text":
                    texts.append(block.get("text", ""))
                elif block.get("type") == "tool_use":
                    arguments = block.get("input") or {}
                    if not isinstance(arguments, dict):
                        raise MalformedResponse(f"tool_use {block.get('name')!r}: input is not an object")
                    calls.append({"id": str(block["id"]), "name": str(block["name"]), "arguments": arguments})
            usage = body.get("usage") or {}
            prompt = int(usage.get("input_tokens") or 0)
            completion = int(usage.get("output_tokens") or 0)
            return {
                "text": "".join(texts),
                "tool_calls": calls,
                "finish_reason": body.get("stop_reason"),
                "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion},
                "model": body.get("model"),
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedResponse(f"unexpected Messages API shape ({type(exc).__name__}: {exc})") from exc


    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "stream": True}

    def accumulator(self) -> AnthropicStream:
        return AnthropicStream()


class AnthropicStream:
    """Folds the Messages API's event stream (message_start, content_block_start/delta/stop, message_delta,
    message_stop) into deltas and, at the end, into a `message` body."""

    def __init__(self) -> None:
        self.finished = False
        self._message: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._tool_index: dict[int, int] = {}  # content block index -> ordinal among the tool calls
        self._stop: str | None = None
        self._usage: dict[str, Any] = {}

    def feed(self, event: str | None, data: str) -> Delta | None:
        try:
            message = json.loads(data)
        except ValueError as exc:
            raise MalformedResponse(f"a stream event is not JSON: {data[:200]!r}") from exc
        if not isinstance(message, dict):
            raise MalformedResponse(f"a stream event is not an object: {data[:200]!r}")
        kind = message.get("type") or event
        try:
            return self._apply(kind, message)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedResponse(f"unexpected {kind} event ({type(exc).__name__}: {exc})") from exc

    def _apply(self, kind: Any, message: dict[str, Any]) -> Delta | None:
        if kind == "message_start":
            self._message = dict(message["message"])
            self._usage = dict(self._message.get("usage") or {})
        elif kind == "content_block_start":
            index, block = int(message["index"]), dict(message["content_block"])
            self._blocks[index] = block
            if block.get("type") == "text" and block.get("text"):
                return Delta(text=str(block["text"]))
            if block.get("type") == "tool_use":
                self._tool_index[index] = ordinal = len(self._tool_index)
                block["partial"] = ""
                return Delta(tools=[ToolDelta(ordinal, str(block["id"]), str(block["name"]))])
        elif kind == "content_block_delta":
            index, piece = int(message["index"]), message["delta"]
            block = self._blocks[index]
            if piece.get("type") == "text_delta":
                block["text"] = block.get("text", "") + piece["text"]
                return Delta(text=str(piece["text"])) if piece["text"] else None
            if piece.get("type") == "input_json_delta" and index in self._tool_index:
                block["partial"] += piece["partial_json"]
                return Delta(tools=[ToolDelta(self._tool_index[index], arguments=str(piece["partial_json"]))])
        elif kind == "message_delta":
            if "stop_reason" in (message.get("delta") or {}):
                self._stop = message["delta"]["stop_reason"]
            self._usage.update({k: v for k, v in (message.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            error = message.get("error") or {}
            raise StreamError(f"{error.get('type', 'error')}: {error.get('message', '')}".strip(": ")
                              if isinstance(error, dict) else str(error))
        return None  # ping, content_block_stop, and what newer API versions add

    def ended(self) -> bool:
        return self.finished or self._stop is not None

    def body(self) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for _, block in sorted(self._blocks.items()):
            if block.get("type") == "tool_use":
                raw = str(block.get("partial", ""))
                try:
                    arguments = json.loads(raw) if raw.strip() else (block.get("input") or {})
                except ValueError as exc:
                    raise MalformedResponse(f"tool_use {block.get('name')!r}: its input is not JSON: "
                                            f"{raw[:200]!r}") from exc
                block = {**{k: v for k, v in block.items() if k != "partial"}, "input": arguments}
            content.append(block)
        return {**self._message, "content": content, "stop_reason": self._stop, "usage": self._usage}


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Tool results become `tool_result` blocks of a user turn; consecutive ones share that turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""),
                     "content": m.get("content", ""), "is_error": bool(m.get("is_error"))}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list) and all(
                    b.get("type") == "tool_result" for b in out[-1]["content"]):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            blocks: list[dict[str, Any]] = []
            if m.get("content"):
                blocks.append({"type": "text", "text": m["content"]})
            blocks += [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                       for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m["role"], "content": m.get("content", "")})
    return out
