"""The OpenAI chat-completions wire format (OpenAI, Azure OpenAI, vLLM, Ollama, any compatible server)."""

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


class OpenAIProvider:
    default_key_header = "Authorization"

    def __init__(self, name: str = "openai", default_base_url: str = "https://api.openai.com/v1",
                 key_hosts: tuple[str, ...] = ("api.openai.com",)) -> None:
        self.name = name
        self.default_base_url = default_base_url
        self.key_hosts = key_hosts

    def auth_headers(self, key: str, header: str | None) -> dict[str, str]:
        if header and header.lower() != "authorization":
            return {header: key}  # Azure OpenAI: `api-key: <key>`
        return {"Authorization": f"Bearer {key}"}

    def build(self, request: ChatRequest) -> WireRequest:
        body: dict[str, Any] = {"model": request.model, "messages": [_message(m) for m in request.messages]}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = request.stop
        if request.tools:
            body["tools"] = [
                {"type": "function",
                 "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in request.tools
            ]
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema", "json_schema": {"name": "answer", "schema": request.schema},
            }
        if request.idempotency_key and self.name == "openai":
            body["metadata"] = {"idempotency_key": request.idempotency_key}
        return WireRequest("/chat/completions", {"Idempotency-Key": request.idempotency_key}, body)

    def parse(self, body: Any) -> dict[str, Any]:
        try:
            choice = body["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            calls: list[dict[str, Any]] = []
            for call in message.get("tool_calls") or []:
                raw = call["function"].get("arguments") or "{}"
                try:
                    arguments = json.loads(raw) if isinstance(raw, str) else raw
                except json.JSONDecodeError as exc:
                    raise MalformedResponse(f"tool call {call['function']['name']!r} has arguments that are "
                                            f"not JSON: {raw[:200]!r}") from exc
                if not isinstance(arguments, dict):
                    raise MalformedResponse(f"tool call {call['function']['name']!r}: arguments are not an object")
                calls.append({"id": str(call.get("id") or f"call_{len(calls)}"),
                              "name": str(call["function"]["name"]), "arguments": arguments})
            usage = body.get("usage") or {}
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            return {
                "text": text if isinstance(text, str) else json.dumps(text),
                "tool_calls": calls,
                "finish_reason": choice.get("finish_reason"),
                "usage": {"input_tokens": prompt, "output_tokens": completion,
                          "total_tokens": int(usage.get("total_tokens") or prompt + completion)},
                "model": body.get("model"),
            }
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise MalformedResponse(f"unexpected chat completion shape ({type(exc).__name__}: {exc})") from exc


    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        # include_usage: a last chunk carries the usage, as the plain answer does
        return {**body, "stream": True, "stream_options": {"include_usage": True}}

    def accumulator(self) -> OpenAIStream:
        return OpenAIStream()


class OpenAIStream:
    """Folds `chat.completion.chunk` events into deltas and, at the end, into a `chat.completion` body."""

    def __init__(self) -> None:
        self.finished = False
        self._text: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._model: str | None = None

    def feed(self, event: str | None, data: str) -> Delta | None:
        if data.strip() == "[DONE]":
            self.finished = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise MalformedResponse(f"a stream chunk is not JSON: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise MalformedResponse(f"a stream chunk is not an object: {data[:200]!r}")
        if chunk.get("error"):
            error = chunk["error"]
            raise StreamError(str(error.get("message") or error) if isinstance(error, dict) else str(error))
        self._model = chunk.get("model") or self._model
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        delta = Delta()
        try:
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                piece = choice.get("delta") or {}
                content = piece.get("content")
                if isinstance(content, str) and content:
                    self._text.append(content)
                    delta.text += content
                for call in piece.get("tool_calls") or []:
                    delta.tools.append(self._tool(call))
                if choice.get("finish_reason"):
                    self._finish = choice["finish_reason"]
        except (TypeError, AttributeError, ValueError) as exc:
            raise MalformedResponse(f"unexpected stream chunk shape ({type(exc).__name__}: {exc})") from exc
        return delta if delta.text or delta.tools else None

    def _tool(self, call: dict[str, Any]) -> ToolDelta:
        index = int(call.get("index") or 0)
        slot = self._tools.setdefault(index, {"id": None, "name": "", "arguments": ""})
        function = call.get("function") or {}
        piece = ToolDelta(index)
        if call.get("id") and not slot["id"]:
            slot["id"] = piece.id = str(call["id"])
        if function.get("name") and not slot["name"]:
            slot["name"] = piece.name = str(function["name"])
        if isinstance(function.get("arguments"), str):
            slot["arguments"] += function["arguments"]
            piece.arguments = function["arguments"]
        return piece

    def ended(self) -> bool:
        return self.finished or self._finish is not None

    def body(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._text) or None}
        if self._tools:
            message["tool_calls"] = [{"id": t["id"], "type": "function",
                                      "function": {"name": t["name"], "arguments": t["arguments"]}}
                                     for _, t in sorted(self._tools.items())]
        return {"object": "chat.completion", "model": self._model,
                "choices": [{"index": 0, "message": message, "finish_reason": self._finish}], "usage": self._usage}


def _message(m: Message) -> dict[str, Any]:
    role = m["role"]
    if role == "tool":
        return {"role": "tool", "tool_call_id": m.get("tool_call_id", ""), "content": m.get("content", "")}
    out: dict[str, Any] = {"role": role, "content": m.get("content", "")}
    if role == "assistant" and m.get("tool_calls"):
        out["content"] = m.get("content") or None
        out["tool_calls"] = [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for c in m["tool_calls"]
        ]
    return out
