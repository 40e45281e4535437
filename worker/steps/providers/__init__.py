"""Wire formats of chat-completion APIs: one module per API family, no vendor SDKs.

Each provider turns a normalized conversation into an HTTP request and a response body back into a
normalized `Completion`. Streaming: `stream_body` asks for the answer as Server-Sent Events and an
`accumulator()` folds the events into `Delta`s (for the live channel) and, at the end, into the body the
plain call would have answered, which `parse` normalizes: a streamed and a plain call give the same result.
The conversation is a list of messages shaped like this:

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id": str, "name": str, "arguments": {...}}],   # assistant only
     "tool_call_id": str, "is_error": bool}                            # tool only
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the `llm` and `agent` executors ask for, independent of the wire format."""

    model: str
    messages: list[Message]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class WireRequest:
    path: str  # appended to the base URL
    headers: dict[str, str]
    body: dict[str, Any]


class MalformedResponse(Exception):
    """The API answered 2xx with a body that is not the documented shape."""


class StreamError(Exception):
    """The provider reported an error inside a stream it had begun with 2xx (e.g. overloaded mid-answer)."""


@dataclass(slots=True)
class ToolDelta:
    """A piece of a tool call being formed: `index` orders the answer's calls; `arguments` is a fragment of
    their JSON text; `id` and `name` come with a call's first piece."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Delta:
    """What one stream event added to the answer."""

    text: str = ""
    tools: list[ToolDelta] = field(default_factory=list)


class StreamAccumulator(Protocol):
    finished: bool
    """The provider said the answer is complete (OpenAI `[DONE]`, Anthropic `message_stop`)."""

    def feed(self, event: str | None, data: str) -> Delta | None:
        """One SSE event (its `event:` name, its `data:` text); raises MalformedResponse or StreamError."""
        ...

    def ended(self) -> bool:
        """Whether a stream that closed now (cleanly) holds a whole answer."""
        ...

    def body(self) -> dict[str, Any]:
        """The answer as the plain (non-streaming) API would have given it, for `Provider.parse`."""
        ...


class Provider(Protocol):
    name: str
    default_base_url: str
    default_key_header: str
    key_hosts: tuple[str, ...]
    """The provider's own API hosts: a key from the worker's environment may always go there (over https)."""

    def build(self, request: ChatRequest) -> WireRequest: ...

    def parse(self, body: Any) -> dict[str, Any]:
        """{"text", "tool_calls", "finish_reason", "usage": {input_tokens, output_tokens, total_tokens}, "model"}."""
        ...

    def auth_headers(self, key: str, header: str | None) -> dict[str, str]: ...

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body of `build`, asking for the answer as a stream."""
        ...

    def accumulator(self) -> StreamAccumulator: ...


def get_provider(name: str) -> Provider:
    from worker.steps.providers.anthropic import AnthropicProvider
    from worker.steps.providers.openai import OpenAIProvider

    if name == "anthropic":
        return AnthropicProvider()
    if name == "ollama":
        return OpenAIProvider(name="ollama", default_base_url="http://127.0.0.1:11434/v1", key_hosts=())
    return OpenAIProvider()
