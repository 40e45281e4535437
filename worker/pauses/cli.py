"""`agentrt pause`, `agentrt resume` and `agentrt paused` (registered into worker.cli)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from worker import output as o
from worker.cli.support import EXIT_OK, EXIT_USAGE, with_client

_TARGET_HELP = "the run (id or unique prefix); or --workflow"


def register(sub: Any) -> dict[str, Any]:
    pa = sub.add_parser(
        "pause", help="pause a run or a whole workflow: no further step starts until it is resumed",
        description="Pause a run (`agentrt pause RUN`) or every run of a workflow (`agentrt pause --workflow W`, "
                    "\"stop every refund now\"). A paused run starts no further step: the step in flight "
                    "finishes (or, with --now, is interrupted and retried on resume), then the run is parked "
                    "as `paused` and holds no worker slot. Runs of a paused workflow started meanwhile (by a "
                    "person, the API, a schedule, an event or a webhook) are created and wait: nothing is "
                    "dropped. Survives restarts. Needs the `cancel` permission; audited with the reason.")
    pa.add_argument("run", nargs="?", help=_TARGET_HELP)
    pa.add_argument("--workflow", "-w", default=None, metavar="W", help="pause this workflow and all its runs")
    pa.add_argument("--reason", "-m", default=None, help="why (shown in lists and the console, and audited)")
    pa.add_argument("--now", action="store_true",
                    help="interrupt the steps in flight instead of letting them finish (they run again on resume; "
                         "a non-idempotent external call asks a human whether it took effect)")
    pa.add_argument("--wait", type=float, default=10.0, metavar="S",
                    help="seconds to wait for the runs to stop starting steps before returning (default 10)")
    pa.add_argument("--json", action="store_true")
    re = sub.add_parser(
        "resume", help="resume a paused run or workflow: its runs go on where they stopped",
        description="Lift a pause set by `agentrt pause`. A run goes on from where it stopped (timers that came "
                    "due while it was paused take effect now). Resuming a workflow resumes its runs, except those "
                    "paused one by one. Needs the `cancel` permission; audited.")
    re.add_argument("run", nargs="?", help=_TARGET_HELP)
    re.add_argument("--workflow", "-w", default=None, metavar="W", help="resume this workflow and its runs")
    re.add_argument("--json", action="store_true")
    pd = sub.add_parser("paused", help="paused workflows and runs: by whom, since when, why",
                        description="The workflows paused with `agentrt pause --workflow`, then the paused runs.")
    pd.add_argument("--workflow", "-w", default=None, metavar="W", help="only this workflow's runs")
    pd.add_argument("--limit", type=int, default=100)
    pd.add_argument("--json", action="store_true")
    return {"pause": with_client(cmd_pause), "resume": with_client(cmd_resume), "paused": with_client(cmd_paused)}


def _target(args: argparse.Namespace) -> str | None:
    if (args.run is None) == (args.workflow is None):
        o.err.print("give a run or --workflow W (one of them)", markup=False)
        return None
    return args.run or args.workflow


async def cmd_pause(client: Any, args: argparse.Namespace) -> int:
    if _target(args) is None:
        return EXIT_USAGE
    if args.workflow:
        done = await client.pause_workflow(args.workflow, reason=args.reason, now=args.now, settle=args.wait)
    else:
        done = await client.pause_run(args.run, reason=args.reason, now=args.now, settle=args.wait)
    if args.json:
        o.print_json(done)
        return EXIT_OK
    what = f"workflow {done.target}" if args.workflow else f"run {done.target}"
    runs = f" ({len(done.runs)} unfinished run{'s' if len(done.runs) != 1 else ''})" if args.workflow else ""
    o.out.print(f"paused {what}{runs}: no further step starts", markup=False)
    if done.unsettled:
        o.out.print(f"  {len(done.unsettled)} still finishing the step in flight: "
                    + ", ".join(r[:8] for r in done.unsettled[:10]) + (" ..." if len(done.unsettled) > 10 else ""),
                    markup=False)
    return EXIT_OK


async def cmd_resume(client: Any, args: argparse.Namespace) -> int:
    if _target(args) is None:
        return EXIT_USAGE
    if args.workflow:
        done = await client.resume_workflow(args.workflow)
    else:
        done = await client.resume_run(args.run)
    if args.json:
        o.print_json(done)
        return EXIT_OK
    if args.workflow:
        o.out.print(f"resumed workflow {done.target}: {len(done.runs)} run{'s' if len(done.runs) != 1 else ''} "
                    f"go on", markup=False)
    elif done.still_paused:
        o.out.print(f"run {done.target}: its own pause is lifted, but its workflow is still paused", markup=False)
    else:
        o.out.print(f"resumed run {done.target}", markup=False)
    return EXIT_OK


async def cmd_paused(client: Any, args: argparse.Namespace) -> int:
    workflows = await client.paused_workflows()
    runs = await client.paused_runs(args.workflow, limit=args.limit)
    if args.json:
        o.print_json({"workflows": workflows, "runs": runs})
        return EXIT_OK
    if not workflows and not runs:
        o.err.print("nothing is paused")
        return EXIT_OK
    if workflows:
        table = o.table("workflow", "paused by", "since", "reason", "runs", "parked")
        for w in workflows:
            table.add_row(escape(w.workflow), escape(w.by), o.ago(w.at), escape(w.reason or "-"), str(w.runs),
                          str(w.parked))
        o.out.print(table)
    if runs:
        table = o.table("run", "workflow", "status", "step", "pause")
        for r in runs:
            table.add_row(r.run_id[:8], escape(r.workflow), o.status_text(r.status.value),
                          escape(r.current_step or "-"), escape(o.pause_text(r.paused)) if r.paused else "-")
        o.out.print(table)
    return EXIT_OK
