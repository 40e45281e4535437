"""`agentrt schedules` (list), `agentrt schedules pause|resume WORKFLOW`, `agentrt schedules ticks WORKFLOW`
(registered into worker.cli)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from worker import output as o
from worker.cli.support import EXIT_OK, with_client

_CATCH_UP = {
    "latest": "the most recent tick missed while paused fires once",
    "all": "every tick missed while paused fires (at most 1000)",
    "none": "ticks missed while paused are skipped",
}


def register(sub: Any) -> dict[str, Any]:
    sp = sub.add_parser(
        "schedules", help="list schedules (next fire, last run, paused); pause or resume one",
        description="Schedules come from `on: {schedule: {cron: ..., timezone: ...}}` or `{every: 30s}` in workflow "
                    "files; each tick starts one run, exactly once across workers. Without an action: list them.",
        epilog="Examples: `agentrt schedules`, `agentrt schedules pause nightly-report --reason 'warehouse "
               "migration'`, `agentrt schedules resume nightly-report`, `agentrt schedules ticks nightly-report`.")
    sp.add_argument("--json", action="store_true", help="print JSON")
    ssub = sp.add_subparsers(dest="schedule_command", metavar="[ACTION]")
    pa = ssub.add_parser("pause", help="stop a schedule's ticks from firing (audited; needs --reason)",
                         description="No tick fires while a schedule is paused, and it stays paused across edits of "
                                     "its file. Needs the `cancel` permission on the workflow (policy file).")
    pa.add_argument("workflow")
    pa.add_argument("--reason", required=True, help="why (recorded in the audit trail and shown in the list)")
    pa.add_argument("--json", action="store_true", help="print JSON")
    rs = ssub.add_parser("resume", help="let a paused schedule fire again (audited)",
                         description="Ticks that came due while the schedule was paused follow its catch_up policy: "
                                     "latest (default) fires the most recent once, all fires each (at most 1000), "
                                     "none skips them.")
    rs.add_argument("workflow")
    rs.add_argument("--reason", default=None, help="why (recorded in the audit trail)")
    rs.add_argument("--json", action="store_true", help="print JSON")
    tk = ssub.add_parser("ticks", help="the most recent fired ticks of a schedule and the runs they started")
    tk.add_argument("workflow")
    tk.add_argument("--limit", type=int, default=20, help="how many, newest first (default 20)")
    tk.add_argument("--json", action="store_true", help="print JSON")
    return {"schedules": with_client(cmd_schedules)}


def _when(at: datetime | None, sep: str = " ") -> str:
    """Local time and how far from now: `2026-03-29 03:00:00 CEST (in 5h02m)`."""
    if at is None:
        return "-"
    return f"{at.astimezone():%Y-%m-%d %H:%M:%S %Z}{sep}({o.ago(at)})"


async def cmd_schedules(client: Any, args: argparse.Namespace) -> int:
    action = getattr(args, "schedule_command", None)
    if action == "pause":
        info = await client.pause_schedule(args.workflow, args.reason)
        if args.json:
            o.print_json(info)
        else:
            o.out.print(f"paused the schedule of {info.workflow} ({info.schedule}); no tick fires until "
                        f"`agentrt schedules resume {info.workflow}`", markup=False)
        return EXIT_OK
    if action == "resume":
        info = await client.resume_schedule(args.workflow, args.reason)
        if args.json:
            o.print_json(info)
        else:
            o.out.print(f"resumed the schedule of {info.workflow} ({info.schedule}): catch_up {info.catch_up}, "
                        f"{_CATCH_UP.get(info.catch_up, '')}; next fire {_when(info.next_fire_at)}", markup=False)
        return EXIT_OK
    if action == "ticks":
        ticks = await client.schedule_ticks(args.workflow, args.limit)
        if args.json:
            o.print_json(ticks)
            return EXIT_OK
        table = o.table("TICK", "RUN", "FIRED BY", "LATE", "ERROR")
        for t in ticks:
            late = (t.fired_at - t.tick_at).total_seconds()
            table.add_row(_when(t.tick_at), t.run_id[:8] if t.run_id else "-", t.fired_by, o.duration(max(0, late)),
                          o.compact(t.error, 60) if t.error else "")
        o.out.print(table)
        if not ticks:
            o.err.print(f"no fired ticks of {args.workflow} (kept 7 days)")
        return EXIT_OK
    schedules = await client.list_schedules()
    if args.json:
        o.print_json(schedules)
        return EXIT_OK
    # two-line cells keep the table within 80 columns
    table = o.table("WORKFLOW", "SCHEDULE", "NEXT FIRE", "LAST FIRE", "LAST RUN", "PAUSED")
    for s in schedules:
        last_run = f"{s.last_run_id[:8]}\n{s.last_run_status or ''}".strip() if s.last_run_id else "-"
        paused = f"by {s.paused_by}:\n{s.paused_reason or ''}".rstrip(":\n") if s.paused else "-"
        schedule = s.schedule.replace(" (", "\n(") + ("" if s.catch_up == "latest" else f"\ncatch_up {s.catch_up}")
        table.add_row(s.workflow, schedule, _when(s.next_fire_at, "\n"), o.ago(s.last_fire_at), last_run, paused)
    o.out.print(table)
    for s in schedules:
        if s.last_error:
            o.err.print(f"{s.workflow}: the latest tick started no run: {o.compact(s.last_error, 200)}", markup=False)
    if not schedules:
        o.err.print("no schedules: a workflow file gets one with `on: {schedule: {cron: \"0 2 * * *\"}}` or "
                    "`on: {schedule: {every: 30s}}` (listed once a worker has loaded it)", markup=False)
    return EXIT_OK
