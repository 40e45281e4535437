"""`agentrt views` (registered into worker.cli): the saved views of the runs list."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from worker import output as o
from worker.cli.support import EXIT_OK, with_client


def register(sub: Any) -> dict[str, Any]:
    vw = sub.add_parser(
        "views", help="saved views of the runs list (named filters shared by the team)",
        description="Views are saved with `agentrt runs [filters] --save-view NAME` and used with "
                    "`agentrt runs --view NAME` (further flags narrow them) or `:view NAME` in the console.")
    vw.add_argument("action", nargs="?", choices=["list", "delete"], default="list")
    vw.add_argument("name", nargs="?", help="with delete: the view")
    vw.add_argument("--json", action="store_true")
    return {"views": with_client(cmd_views)}


async def cmd_views(client: Any, args: argparse.Namespace) -> int:
    if args.action == "delete":
        if not args.name:
            o.err.print("agentrt views delete NAME")
            return 2
        await client.delete_view(args.name)
        o.out.print(f"deleted view {args.name}", markup=False)
        return EXIT_OK
    views = await client.list_views()
    if args.json:
        o.print_json([{"name": v.name, "filters": v.filters.as_dict(), "created_by": v.created_by,
                       "updated_at": v.updated_at} for v in views])
        return EXIT_OK
    if not views:
        o.err.print("no saved views: agentrt runs --workflow W --status failed --save-view NAME")
        return EXIT_OK
    table = o.table("VIEW", "FILTERS", "SAVED BY", "UPDATED")
    for v in views:
        table.add_row(escape(v.name), escape(v.filters.describe()), escape(v.created_by), o.ago(v.updated_at))
    o.out.print(table)
    return EXIT_OK
