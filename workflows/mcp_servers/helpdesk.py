"""Example MCP server: a tiny helpdesk with a few sample tickets and knowledge-base articles.

This is a demo, not a helpdesk: the data is built in, changes live in memory and are lost when the
process exits. It shows what a real integration looks like: read tools, write tools that honour the
idempotency key the runtime sends in `_meta` (a repeated key returns the first answer and changes
nothing), and errors reported as tool errors. Run it by hand with `python helpdesk.py` (stdio).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("example-helpdesk", instructions="Sample helpdesk for the AgentRuntime demos.",
                   log_level="WARNING")

TICKETS: dict[str, dict[str, Any]] = {
    "T-1001": {"id": "T-1001", "customer": "Ada", "subject": "Charged twice for my subscription",
               "body": "My card was charged twice this month for the Pro plan. Please refund one charge.",
               "priority": "unset", "status": "open", "notes": []},
    "T-1002": {"id": "T-1002", "customer": "Grace", "subject": "Cannot reset my password",
               "body": "The reset link in the email says it has expired, every time.",
               "priority": "unset", "status": "open", "notes": []},
    "T-1003": {"id": "T-1003", "customer": "Linus", "subject": "API is down for our region",
               "body": "Since 09:00 every call to the API from eu-west returns 503.",
               "priority": "unset", "status": "open", "notes": []},
}

ARTICLES = [
    {"id": "KB-1", "title": "Duplicate charges", "keywords": ["charged", "twice", "refund", "billing"],
     "summary": "Duplicate charges are refunded automatically within 5 business days; support can speed this up."},
    {"id": "KB-2", "title": "Password reset links expire", "keywords": ["password", "reset", "link", "expired"],
     "summary": "Reset links are valid for 30 minutes; request a new one and use it from the same browser."},
    {"id": "KB-3", "title": "Regional outages", "keywords": ["down", "503", "outage", "region", "api"],
     "summary": "Check the status page; regional incidents are escalated to the on-call engineer at once."},
]

_done: dict[str, Any] = {}  # idempotency key -> the answer already given


def _once(ctx: Context, make: Any) -> Any:
    meta = ctx.request_context.meta
    data = meta.model_dump() if hasattr(meta, "model_dump") else dict(meta or {})
    key = data.get("idempotency_key")
    if key and key in _done:
        return _done[key]
    result = make()
    if key:
        _done[key] = result
    return result


def _ticket(ticket_id: str) -> dict[str, Any]:
    ticket = TICKETS.get(ticket_id.strip().upper())
    if ticket is None:
        raise ToolError(f"no ticket {ticket_id!r} (sample tickets: {', '.join(TICKETS)})")
    return ticket


@server.tool()
def get_ticket(ticket_id: str) -> dict[str, Any]:
    """Read a ticket: customer, subject, body, priority, status and notes."""
    return _ticket(ticket_id)


@server.tool()
def search_kb(query: str) -> dict[str, list[dict[str, str]]]:
    """Search the knowledge base; the best matching articles first."""
    words = {w.strip(".,!?").lower() for w in query.split()}
    scored = sorted(ARTICLES, key=lambda a: -len(words & set(a["keywords"])))
    return {"articles": [{"id": a["id"], "title": a["title"], "summary": a["summary"]} for a in scored
                         if words & set(a["keywords"])][:3]}


@server.tool()
def set_priority(ticket_id: str, priority: str, ctx: Context) -> str:
    """Set a ticket's priority: low, normal, high or urgent."""
    if priority not in ("low", "normal", "high", "urgent"):
        raise ToolError("priority must be low, normal, high or urgent")
    ticket = _ticket(ticket_id)

    def apply() -> str:
        ticket["priority"] = priority
        return f"{ticket['id']} priority set to {priority}"

    return str(_once(ctx, apply))


@server.tool()
def reply_to_customer(ticket_id: str, message: str, ctx: Context) -> str:
    """Send a reply to the customer (recorded on the ticket)."""
    ticket = _ticket(ticket_id)

    def apply() -> str:
        ticket["notes"].append({"type": "reply", "message": message})
        ticket["status"] = "waiting on customer"
        return f"reply sent to {ticket['customer']} on {ticket['id']}"

    return str(_once(ctx, apply))


if __name__ == "__main__":
    server.run()
