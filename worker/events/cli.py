"""`agentrt send-event` and `agentrt waits` (registered into worker.cli)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from worker import output as o
from worker.cli.support import EXIT_OK, EXIT_USAGE, json_arg, with_client


def register(sub: Any) -> dict[str, Any]:
    se = sub.add_parser(
        "send-event", help="deliver an event: start subscribed workflows' runs, resume runs waiting for it",
        description="Deliver an event as POST /v1/events does: every workflow with `on: {event: {name: NAME}}` "
                    "starts a run with --data as its inputs, and every run whose `wait` step waits for NAME "
                    "(and --key) resumes with the event. Sent from the terminal, it is in the audit trail.")
    se.add_argument("name", help="the event's name, e.g. ticket.created")
    se.add_argument("--key", default=None, help="what the event is about (e.g. a ticket id): waits match on it")
    se.add_argument("--data", type=json_arg, default={}, metavar="JSON", help="the payload (a JSON object)")
    se.add_argument("--idempotency-key", default=None, metavar="KEY",
                    help="sending again with this key replays the delivery instead of repeating it")
    se.add_argument("--json", action="store_true")
    wt = sub.add_parser("waits", help="runs waiting for an event (`uses: wait`): name, key, deadline",
                        description="Runs parked in a `wait` step, oldest first.")
    wt.add_argument("--event", default=None, metavar="NAME", help="only waits for this event name")
    wt.add_argument("--key", default=None, help="only waits for this key")
    wt.add_argument("--run", default=None, metavar="RUN", help="only this run (id or unique prefix)")
    wt.add_argument("--limit", type=int, default=200)
    wt.add_argument("--json", action="store_true")
    return {"send-event": with_client(cmd_send_event), "waits": with_client(cmd_waits)}


async def cmd_send_event(client: Any, args: argparse.Namespace) -> int:
    if not isinstance(args.data, dict):
        o.err.print("--data must be a JSON object")
        return EXIT_USAGE
    delivery = await client.send_event(args.name, args.key, args.data, idempotency_key=args.idempotency_key)
    if args.json:
        o.print_json(delivery)
        return EXIT_OK
    o.out.print(f"event {delivery.event_id}" + (" (replayed: this key was sent before)" if delivery.replayed else ""),
                markup=False)
    for run_id in delivery.started:
        o.out.print(f"  started run {run_id}", markup=False)
    for run_id in delivery.delivered_to:
        o.out.print(f"  resumed run {run_id}", markup=False)
    for refusal in delivery.refused:
        o.out.print(f"  not started: {refusal['workflow']}: {refusal['reason']}", markup=False)
    if not delivery.started and not delivery.refused and not delivery.delivered_to:
        key = "" if args.key is None else f" with key {args.key!r}"
        o.err.print(f"nothing subscribes to {args.name!r} (`on: {{event: {{name: {args.name}}}}}`) and no run "
                    f"waits for it{key}; it is kept for waits that start within their lookback window",
                    markup=False)
    return EXIT_OK


def _until(deadline: datetime | None) -> str:
    if deadline is None:
        return "no deadline"
    when = deadline.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{when} ({o.ago(deadline)})" if deadline > datetime.now(tz=UTC) else f"{when} (due)"


async def cmd_waits(client: Any, args: argparse.Namespace) -> int:
    waits = await client.open_waits(name=args.event, key=args.key, run_id=args.run, limit=args.limit)
    if args.json:
        o.print_json(waits)
        return EXIT_OK
    if not waits:
        o.err.print("no run is waiting for an event")
        return EXIT_OK
    table = o.table("run", "workflow", "step", "event", "key", "deadline")
    for w in waits:
        step = w.step_id if w.item is None else f"{w.step_id}[{w.item}]"
        table.add_row(w.run_id[:8], w.workflow, step, w.name, "(any)" if w.key is None else w.key, _until(w.deadline))
    o.out.print(table)
    return EXIT_OK
