"""What a notification looks like on the wire: the JSON or Slack body, its headers and its HMAC signature. Pure.

JSON (`format: json`): the stored event with `id` (the notification id, stable across deliveries) and `sent_at`
(unix seconds, equal to `X-Notification-Timestamp`). Slack (`format: slack`): `{"text", "blocks"}`, which Slack's
incoming webhooks (and Mattermost's, Rocket.Chat's) accept, the id in a context block. Either way the headers are

    Content-Type: application/json
    X-Notification-Id: <id>            the receiver deduplicates on it
    X-Notification-Kind: task.created
    X-Notification-Timestamp: <unix seconds>
    X-Notification-Attempt: <n>
    X-Signature: sha256=<hex HMAC-SHA256 of the body under the target's signing secret>

The signature covers the body, which holds the timestamp (`sent_at` in JSON, the context block in Slack format):
a receiver verifies the signature, then refuses a timestamp older than a few minutes (replays). `verify` is what a
receiver written in Python does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SIGNATURE_HEADER = "X-Signature"
MAX_AGE_S = 300.0
"""How old a timestamp `verify` accepts (a receiver chooses its own)."""


def summary_of(kind: str, body: dict[str, Any]) -> str:
    """The one-line text of a notification (a worker.lost one counts the runs aggregated so far)."""
    if kind == "worker.lost":
        w = body.get("worker") or {}
        return (f"Worker {w.get('lost')} stopped heartbeating while holding {w.get('run_count', 0)} run(s); "
                f"{w.get('taken_over_by')} took them over")
    return str(body.get("summary") or kind)


def json_body(notification_id: str, kind: str, body: dict[str, Any], sent_at: int) -> dict[str, Any]:
    return {"id": notification_id, "sent_at": sent_at, **body, "kind": kind, "summary": summary_of(kind, body)}


def _escape(text: str) -> str:
    """Slack mrkdwn: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(notification_id: str, kind: str, body: dict[str, Any], sent_at: int) -> dict[str, Any]:
    """`{"text", "blocks"}`: the summary, the facts as fields, what to do, and the id."""
    summary = summary_of(kind, body)
    fields: list[tuple[str, Any]] = [("Kind", kind), ("Workflow", body.get("workflow")), ("Run", body.get("run_id"))]
    task = body.get("task") or {}
    if task:
        fields += [("Step", task.get("step_id")), ("Deadline", task.get("deadline")),
                   ("Approvers", ", ".join(task.get("approvers") or []) or None)]
    run = body.get("run") or {}
    if run:
        fields += [("Step", run.get("step_id")), ("Attempts", run.get("attempts"))]
    worker = body.get("worker") or {}
    if worker:
        runs = ", ".join(f"{r.get('run_id', '')[:8]} ({r.get('workflow')})" for r in worker.get("runs", [])[:10])
        fields += [("Lost worker", worker.get("lost")), ("Taken over by", worker.get("taken_over_by")),
                   ("Runs", runs or None)]
    shown = [{"type": "mrkdwn", "text": f"*{name}*\n{_escape(str(value))[:300]}"}
             for name, value in fields if value not in (None, "")][:10]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": _escape(summary)[:2900]}}]
    if shown:
        blocks.append({"type": "section", "fields": shown})
    context = f"id {notification_id} · sent_at {sent_at}"
    if body.get("hint"):
        context = f"`{_escape(str(body['hint']))}` · " + context
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": summary[:3000], "blocks": blocks}


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def render(notification_id: str, kind: str, body: dict[str, Any], *, fmt: str, secret: str | None, attempt: int,
           sent_at: int | None = None, extra_headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    """The request body and headers of one delivery attempt."""
    sent_at = int(time.time()) if sent_at is None else sent_at
    doc = slack_body(notification_id, kind, body, sent_at) if fmt == "slack" else \
        json_body(notification_id, kind, body, sent_at)
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {**(extra_headers or {}), "Content-Type": "application/json", "User-Agent": "agentrt-notify/1",
               "X-Notification-Id": notification_id, "X-Notification-Kind": kind,
               "X-Notification-Timestamp": str(sent_at), "X-Notification-Attempt": str(attempt)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, data)
    return data, headers


def verify(secret: str | bytes, body: bytes, headers: dict[str, str], *, now: float | None = None,
           max_age: float = MAX_AGE_S) -> dict[str, Any]:
    """A receiver's check: the signature matches the body and the timestamp is recent. Returns the parsed body;
    raises ValueError why not. `headers` with lowercase names."""
    given = headers.get("x-signature", "")
    if not hmac.compare_digest(given, sign(secret, body)):
        raise ValueError("bad signature")
    stamp = int(headers.get("x-notification-timestamp", "0"))
    if abs((time.time() if now is None else now) - stamp) > max_age:
        raise ValueError("stale timestamp (a replay?)")
    doc: dict[str, Any] = json.loads(body)
    if "sent_at" in doc and doc["sent_at"] != stamp:
        raise ValueError("the body's sent_at differs from X-Notification-Timestamp")
    return doc
