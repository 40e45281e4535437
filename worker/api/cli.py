"""`agentrt serve` (the HTTP API) and `agentrt api-token create|list|revoke` (registered into worker.cli).

`agentrt send-event` is in worker/events/cli.py."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import Any

from worker import output as o
from worker.cli.support import EXIT_OK, EXIT_USAGE, with_client
from worker.client.access import SCOPES
from worker.config import Settings

DEFAULT_PORT = 8421


def _duration(text: str) -> timedelta:
    from worker.definitions.schema import parse_duration

    try:
        return timedelta(seconds=parse_duration(text))
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 30d, 12h, 90m): {exc}") from exc


def register(sub: Any) -> dict[str, Any]:
    sv = sub.add_parser("serve", help="run the HTTP API (JSON; OpenAPI at /openapi.json)",
                        description="The HTTP API: start runs (Idempotency-Key), read them, stream their events, "
                                    "cancel, decide approvals. Stateless: run as many as you like behind a load "
                                    "balancer. Callers need a bearer token: `agentrt api-token create`.")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    sv.add_argument("--proxy-headers", action="store_true",
                    help="trust X-Forwarded-For from the load balancer for the caller's address (audit trail)")

    tk = sub.add_parser("api-token", help="create, list or revoke bearer tokens of the HTTP API")
    tsub = tk.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    cr = tsub.add_parser("create", help="create a token; it is printed once and stored only as a hash")
    cr.add_argument("name", help="the token's name; it acts as the principal api:NAME (policy file, audit trail)")
    cr.add_argument("--scope", action="append", choices=SCOPES, required=True, dest="scopes",
                    help="what the token may do (repeat for several): " + ", ".join(SCOPES))
    cr.add_argument("--expires-in", type=_duration, default=None, metavar="DURATION",
                    help="the token stops working after this long (e.g. 90d); default: never")
    cr.add_argument("--json", action="store_true")
    ls = tsub.add_parser("list", help="list tokens (names, scopes, state; never the tokens)")
    ls.add_argument("--all", action="store_true", help="include revoked tokens")
    ls.add_argument("--json", action="store_true")
    rv = tsub.add_parser("revoke", help="revoke a token by name (takes effect within 2 s)")
    rv.add_argument("name")
    rv.add_argument("--json", action="store_true")
    return {"serve": cmd_serve, "api-token": with_client(cmd_api_token)}


def max_body() -> int:
    from worker.api.app import MAX_BODY
    from worker.errors import ConfigError

    raw = os.environ.get("AGENTRT_API_MAX_BODY", "").strip()
    if not raw:
        return MAX_BODY
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"AGENTRT_API_MAX_BODY={raw!r}: a number of bytes") from exc
    if value < 1024:
        raise ConfigError(f"AGENTRT_API_MAX_BODY={value}: at least 1024 bytes")
    return value


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from worker.api.app import create_app

    if not 0 < args.port < 65536:
        o.err.print(f"[red]--port {args.port}: not a port[/]")
        return EXIT_USAGE
    app = create_app(settings, max_body=max_body())
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            proxy_headers=args.proxy_headers, forwarded_allow_ips="*" if args.proxy_headers else None,
                            server_header=False, lifespan="on")
    server = uvicorn.Server(config)
    o.err.print(f"AgentRuntime API on http://{args.host}:{args.port} (OpenAPI: /openapi.json)")
    server.run()
    return EXIT_OK if server.started else 5


async def cmd_api_token(client: Any, args: argparse.Namespace) -> int:
    if args.token_command == "create":
        token, record = await client.create_api_token(args.name, args.scopes, expires_in=args.expires_in)
        if args.json:
            o.print_json({"token": token, **o.to_jsonable(record), "principal": record.principal})
            return EXIT_OK
        o.out.print(token, markup=False)
        o.err.print(f"API token {record.name!r} (principal {record.principal}, scopes {', '.join(record.scopes)}"
                    + (f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "")
                    + "). It is shown this once: store it now.", markup=False)
        return EXIT_OK
    if args.token_command == "list":
        tokens = await client.list_api_tokens(include_revoked=args.all)
        if args.json:
            o.print_json([{**o.to_jsonable(t), "state": t.state()} for t in tokens])
            return EXIT_OK
        table = o.table("NAME", "SCOPES", "STATE", "CREATED", "BY", "EXPIRES")
        for t in tokens:
            table.add_row(t.name, ",".join(t.scopes), t.state(), o.ago(t.created_at), t.created_by,
                          f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never")
        o.out.print(table)
        if not tokens:
            o.err.print("no API tokens (create one with `agentrt api-token create NAME --scope runs:read`)")
        return EXIT_OK
    record = await client.revoke_api_token(args.name)
    if args.json:
        o.print_json({**o.to_jsonable(record), "state": record.state()})
    else:
        o.out.print(f"revoked API token {record.name!r}", markup=False)
    return EXIT_OK
