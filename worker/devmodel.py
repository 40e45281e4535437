"""The offline demo model: a local HTTP server speaking the OpenAI chat-completions wire format with
scripted, deterministic replies, so the demo workflows run with no API key and no network.

It is not a language model. It follows a fixed playbook keyed by the tools it is offered:

- helpdesk tools (`get_ticket`, `search_kb`, ...): read the ticket named in the prompt, search the
  knowledge base for its subject, set a priority, draft a reply, then answer with a triage summary;
- research tools (`search_notes`, `read_note`): search for the topic, read the two best notes, then
  answer with a summary stitched from their first sentences;
- no tools: answer the prompt with a canned sentence, or with JSON matching `response_format`.

Every answer says it comes from the offline demo model. `start_demo_model()` runs it in a thread.

A request with `"stream": true` gets the same answer as real chunked Server-Sent Events, as OpenAI streams it:
`chat.completion.chunk`s carrying the text in token-sized pieces (about four characters) and the tool calls in
pieces (`index`, `id` and `function.name` first, then `function.arguments` a few characters at a time), a last
chunk with `finish_reason`, a usage chunk when `stream_options.include_usage` asks for it, then `[DONE]`. The
pieces are paced at `AGENTRT_DEMO_MODEL_TPS` tokens a second (default 40; 0: as fast as the socket takes them),
but no answer takes longer than `MAX_STREAM_SECONDS` (a longer one is sent faster), so the demos stay quick.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

MODEL_NAME = "agentrt-offline-demo"
LABEL = "[offline demo model]"
TPS_ENV = "AGENTRT_DEMO_MODEL_TPS"
DEFAULT_TPS = 40.0
MAX_STREAM_SECONDS = 3.0
"""The longest a streamed answer takes: one with more pieces than that at the pace is sent faster."""


def _tool_names(body: dict[str, Any]) -> list[str]:
    return [t.get("function", {}).get("name", "") for t in body.get("tools") or []]


def _user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(tool name, result text) of every tool result so far, matched to the assistant's calls by id."""
    names: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for m in messages:
        for call in m.get("tool_calls") or []:
            names[call.get("id", "")] = call.get("function", {}).get("name", "")
        if m.get("role") == "tool":
            out.append((names.get(m.get("tool_call_id", ""), ""), str(m.get("content") or "")))
    return out


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _example(schema: dict[str, Any]) -> Any:
    """A small value that satisfies a (simple) JSON schema."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _example(v) for k, v in props.items()}
    if kind == "array":
        return [_example(schema.get("items") or {})] if schema.get("minItems") else []
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "demo"


class Playbook:
    """Decides the next reply from the request alone (deterministic: same request, same reply)."""

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        tools = _tool_names(body)
        results = _tool_results(messages)
        if "get_ticket" in tools:
            return self._helpdesk(messages, tools, results)
        if "search_notes" in tools:
            return self._research(messages, results)
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            return _text(json.dumps(_example(schema)))
        prompt = _user_text(messages).strip().splitlines()
        first = prompt[0][:120] if prompt else ""
        return _text(f"{LABEL} You asked: \"{first}\". A real model would answer here; set a provider and an "
                     "API key in the workflow to get one.")

    def _helpdesk(self, messages: list[dict[str, Any]], tools: list[str],
                  results: list[tuple[str, str]]) -> dict[str, Any]:
        done = [name for name, _ in results]
        match = re.search(r"\b([A-Z]{1,5}-\d+)\b", _user_text(messages))
        ticket_id = match.group(1) if match else "T-1"
        ticket = next((_json(text) for name, text in results if name == "get_ticket"), None) or {}
        if "get_ticket" not in done:
            return _calls([("get_ticket", {"ticket_id": ticket_id})])
        if "search_kb" in tools and "search_kb" not in done:
            return _calls([("search_kb", {"query": str(ticket.get("subject") or ticket_id)})])
        priority = "high" if any(w in str(ticket).lower() for w in ("outage", "down", "charged twice", "urgent")) \
            else "normal"
        if "set_priority" in tools and "set_priority" not in done:
            return _calls([("set_priority", {"ticket_id": ticket_id, "priority": priority})])
        found = next((_json(text) for name, text in results if name == "search_kb"), None)
        articles = found.get("articles", []) if isinstance(found, dict) else []
        article = articles[0] if isinstance(articles, list) and articles else {}
        if "reply_to_customer" in tools and "reply_to_customer" not in done:
            body = (f"Hello {ticket.get('customer', 'there')}, thanks for reaching out about "
                    f"\"{ticket.get('subject', ticket_id)}\". {article.get('summary', 'We are looking into it.')}")
            return _calls([("reply_to_customer", {"ticket_id": ticket_id, "message": body})])
        reply = next((text for name, text in results if name == "reply_to_customer"), "")
        return _text(f"{LABEL} Triage of {ticket_id}: priority {priority}; "
                     f"suggested article: {article.get('title', 'none')}; "
                     f"customer reply: {reply or 'not sent'}.")

    def _research(self, messages: list[dict[str, Any]], results: list[tuple[str, str]]) -> dict[str, Any]:
        topic = _user_text(messages).strip().splitlines()[-1] if _user_text(messages).strip() else "the topic"
        found = next((_json(text) for name, text in results if name == "search_notes"), None)
        if found is None:
            return _calls([("search_notes", {"query": topic[:200]})])
        hits = found.get("results", []) if isinstance(found, dict) else []
        read = [text for name, text in results if name == "read_note"]
        if not read and hits:
            return _calls([("read_note", {"note_id": h["id"]}) for h in hits[:2] if isinstance(h, dict) and "id" in h])
        points = []
        for text in read:
            note = _json(text) or {}
            body = str(note.get("body") or text)
            points.append(f"- {note.get('title', 'note')}: {body.split('. ')[0].rstrip('.')}.")
        summary = "\n".join(points) or "- nothing relevant was found in the notes."
        return _text(f"{LABEL} Summary for \"{topic[:120]}\":\n{summary}")


def _usage(body: Any, completion: str) -> dict[str, int]:
    prompt = max(1, len(json.dumps(body)) // 4)
    out = max(1, len(completion) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}


def _text(text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}


def _calls(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{name}_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for i, (name, args) in enumerate(calls)]}, "finish_reason": "tool_calls"}


def _pieces(text: str) -> list[str]:
    """Token-like pieces: a word with the spaces before it, words longer than four characters in parts."""
    out: list[str] = []
    for word in re.findall(r"\s*\S+|\s+", text):
        head = len(word) - len(word.lstrip())
        first = head + 4
        out.append(word[:first])
        out += [word[i:i + 4] for i in range(first, len(word), 4)]
    return out


def stream_chunks(reply: dict[str, Any], *, include_usage: bool) -> list[tuple[dict[str, Any] | str, bool]]:
    """A `chat.completion` reply as the chunks of its stream: (chunk, whether it carries a piece of the answer,
    which pacing counts); the last is the string `[DONE]`. Assembled, the chunks give the reply back."""
    base: dict[str, Any] = {k: reply[k] for k in ("id", "model", "system_fingerprint") if k in reply}
    base |= {"object": "chat.completion.chunk", "created": reply.get("created", 0)}
    choice = reply["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    out: list[tuple[dict[str, Any] | str, bool]] = [(chunk({"role": "assistant", "content": ""}), False)]
    out += [(chunk({"content": piece}), True) for piece in _pieces(message.get("content") or "")]
    for i, call in enumerate(message.get("tool_calls") or []):
        out.append((chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"], "arguments": ""}}]}), True))
        arguments = call["function"].get("arguments") or ""
        out += [(chunk({"tool_calls": [{"index": i, "function": {"arguments": arguments[j:j + 8]}}]}), True)
                for j in range(0, len(arguments), 8)]
    out.append((chunk({}, choice.get("finish_reason")), False))
    if include_usage:
        out.append(({**base, "choices": [], "usage": reply["usage"]}, False))
    out.append(("[DONE]", False))
    return out


def _pause(tokens_per_s: float, pieces: int) -> float:
    """Seconds between two pieces of an answer of `pieces` pieces."""
    if tokens_per_s <= 0 or pieces < 2:
        return 0.0
    return min(1.0 / tokens_per_s, MAX_STREAM_SECONDS / (pieces - 1))


def tokens_per_s_from_env() -> float:
    """`AGENTRT_DEMO_MODEL_TPS` (default 40; 0 or less: no pacing)."""
    raw = os.environ.get(TPS_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_TPS
    except ValueError:
        raise ValueError(f"{TPS_ENV}={raw!r} is not a number (tokens a second; 0: no pacing)") from None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tokens_per_s = DEFAULT_TPS
    stopping: threading.Event


def _handler(playbook: Playbook) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "agentrt-demo-model"
        # headers and each piece of a stream leave in separate writes: without TCP_NODELAY each one after the
        # first would wait for the client's delayed ACK (~40 ms)
        disable_nagle_algorithm = True
        server: _Server

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            if not self.path.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"{LABEL} only /v1/chat/completions is served"}})
                return
            try:
                body = json.loads(raw)
                choice = playbook.reply(body)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                self._send(400, {"error": {"message": f"{LABEL} cannot handle this request: {exc}"}})
                return
            content = choice["message"].get("content") or json.dumps(choice["message"].get("tool_calls"))
            reply = {
                "id": "chatcmpl-demo", "object": "chat.completion", "model": MODEL_NAME,
                "choices": [{"index": 0, **choice}], "usage": _usage(body.get("messages"), content),
                "system_fingerprint": "offline-demo",
            }
            if body.get("stream") is not True:
                self._send(200, reply)
                return
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            try:
                self._stream(stream_chunks(reply, include_usage=include_usage))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away mid-answer

        def _stream(self, chunks: list[tuple[dict[str, Any] | str, bool]]) -> None:
            """Chunked transfer encoding (the connection stays usable), one chunk per event, paced."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pause = _pause(self.server.tokens_per_s, sum(piece for _, piece in chunks))
            sent = 0
            for data, piece in chunks:
                if piece:
                    if sent and pause and self.server.stopping.wait(pause):
                        self.close_connection = True  # stopping: end the answer here (no end marker)
                        return
                    sent += 1
                event = b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@dataclass
class DemoModelServer:
    """A running demo model; `base_url` ends in /v1 (use it as an OpenAI `base_url`)."""

    base_url: str
    _server: _Server
    _thread: threading.Thread

    @property
    def tokens_per_s(self) -> float:
        """The pace of streamed answers (0: unpaced); may be changed while it runs."""
        return self._server.tokens_per_s

    @tokens_per_s.setter
    def tokens_per_s(self, value: float) -> None:
        self._server.tokens_per_s = max(0.0, value)

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_demo_model(host: str = "127.0.0.1", port: int = 0, *,
                     tokens_per_s: float | None = None) -> DemoModelServer:
    """Start the offline demo model in a background thread; streamed answers are paced at `tokens_per_s`
    (None: `AGENTRT_DEMO_MODEL_TPS`, default 40; 0: unpaced)."""
    pace = tokens_per_s_from_env() if tokens_per_s is None else max(0.0, tokens_per_s)
    server = _Server((host, port), _handler(Playbook()))
    server.tokens_per_s = pace
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                              name="demo-model")
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    return DemoModelServer(f"http://{shown}:{server.server_address[1]}/v1", server, thread)
