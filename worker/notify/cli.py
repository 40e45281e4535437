"""`agentrt notifications [--pending | --failed | --delivered] [--limit N] [--json]` (registered into worker.cli):
the notifications outbox, newest first, with each row's attempts, next try and last error."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from worker import output as o
from worker.cli.support import EXIT_OK, with_client


def register(sub: Any) -> dict[str, Any]:
    sp = sub.add_parser(
        "notifications", help="the notifications outbox: sent, waiting for a retry, given up",
        description="Webhooks to the targets of the operator's notify.yaml (human task created, about to time out "
                    "or escalated; run failed; worker lost). Each is retried with backoff until delivered or "
                    "until give_up_after; the id is what receivers deduplicate on.",
        epilog="Examples: `agentrt notifications`, `agentrt notifications --pending`, "
               "`agentrt notifications --failed --json`.")
    which = sp.add_mutually_exclusive_group()
    which.add_argument("--pending", action="store_const", const="pending", dest="status",
                       help="only those waiting for their first or next attempt")
    which.add_argument("--failed", action="store_const", const="failed", dest="status",
                       help="only those given up (give_up_after passed)")
    which.add_argument("--delivered", action="store_const", const="delivered", dest="status",
                       help="only those delivered")
    sp.add_argument("--limit", type=int, default=50, help="how many, newest first (default 50)")
    sp.add_argument("--json", action="store_true", help="print JSON")
    return {"notifications": with_client(cmd_notifications)}


def _state(n: Any) -> str:
    if n.status == "delivered":
        return f"{o.status_text('delivered')}\n{o.ago(n.finished_at)}"
    if n.status == "failed":
        return f"{o.status_text('failed')}\ngave up {o.ago(n.finished_at)}"
    if n.claimed_by:
        return f"{o.status_text('pending')}\nsending ({n.claimed_by})"
    return f"{o.status_text('pending')}\nnext {o.ago(n.next_attempt_at)}"


async def cmd_notifications(client: Any, args: argparse.Namespace) -> int:
    found = await client.list_notifications(status=args.status, limit=args.limit)
    config = client.notify_config()
    if args.json:
        o.print_json(found)
    else:
        table = o.table("ID", "KIND", "TARGET", "STATE", "TRIES", "ABOUT")
        for n in found:
            about = n.summary if len(n.summary) <= 100 else n.summary[:99] + "…"
            if n.last_error and n.status != "delivered":
                about += f"\nlast error: {n.last_error[:120]}"
            table.add_row(n.notification_id[:8], n.kind, Text(n.target), _state(n), str(n.attempts), Text(about))
        if found:
            o.out.print(table)
        else:
            o.err.print("no notifications" + (f" {args.status}" if args.status else ""), markup=False)
    if config.path is None:
        o.err.print("no notify.yaml beside the workflows (nor AGENTRT_NOTIFY_FILE): nothing is sent", markup=False)
    elif config.error:
        o.err.print(f"{config.error} (the workers keep the previous good version)", markup=False)
    elif not args.json:
        o.err.print(f"{config.path}: {len(config.targets)} target(s) ({', '.join(config.targets) or 'none'}), "
                    f"{config.routes} route(s)", markup=False)
    return EXIT_OK
