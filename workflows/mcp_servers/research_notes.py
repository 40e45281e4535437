"""Example MCP server: search and read a small built-in collection of research notes.

A demo, honest about it: the notes are a handful of paragraphs shipped in this file. A real
deployment would point the same two tools at a search index or a document store.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("example-research-notes", log_level="WARNING")

NOTES: dict[str, dict[str, str]] = {
    "N-1": {"title": "Durable execution",
            "body": "Durable execution records each step's result before the next step starts, so a crashed "
                    "process resumes where it stopped. Event sourcing keeps the full history for replay."},
    "N-2": {"title": "Idempotency keys",
            "body": "An idempotency key lets a callee recognise a retried request and answer it without "
                    "repeating the effect. Keys must be stable across retries and crashes."},
    "N-3": {"title": "Human in the loop",
            "body": "Approval gates pause an automated process until a person decides. Every decision "
                    "should be audited with who, when and why."},
    "N-4": {"title": "Model Context Protocol",
            "body": "MCP is an open protocol that lets applications expose tools and data to language models "
                    "over stdio or HTTP. Servers describe their tools with JSON schemas."},
    "N-5": {"title": "Token budgets",
            "body": "Agents that loop need limits on turns and tokens. A budget turns a runaway loop into a "
                    "bounded cost that operators can see per run."},
}


@server.tool()
def search_notes(query: str) -> dict[str, list[dict[str, Any]]]:
    """Find notes whose title or text shares words with the query; best matches first."""
    words = {w.strip(".,!?\"'").lower() for w in query.split() if len(w) > 2}
    scored = []
    for note_id, note in NOTES.items():
        text = (note["title"] + " " + note["body"]).lower()
        score = sum(1 for w in words if w in text)
        if score:
            scored.append((score, note_id, note["title"]))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return {"results": [{"id": note_id, "title": title, "score": score} for score, note_id, title in scored[:5]]}


@server.tool()
def read_note(note_id: str) -> dict[str, str]:
    """The full text of one note."""
    note = NOTES.get(note_id.strip().upper())
    if note is None:
        raise ToolError(f"no note {note_id!r}")
    return {"id": note_id, **note}


if __name__ == "__main__":
    server.run()
