"""`agentrt doctor` and `agentrt gc` (loaded by worker.cli through EXTENSION_MODULES)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from worker import output as o
from worker.config import Settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

CHECKS = ("config", "egress", "postgres", "redis", "vault", "otlp")
_STYLE = {"ok": "[green]ok[/]  ", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "skip": "[dim]skip[/]"}


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace, Settings], int]]:
    d = subparsers.add_parser(
        "doctor", help="check configuration, Postgres, Redis, Vault and the OTLP endpoint",
        description="Check the configuration and every dependency and say what is wrong. Exit 0 when "
                    "nothing required is broken, 1 otherwise (with --strict, warnings count too).")
    d.add_argument("--json", action="store_true")
    d.add_argument("--strict", action="store_true", help="exit 1 on warnings as well")
    d.add_argument("--check", action="append", choices=CHECKS, metavar="NAME",
                   help=f"run only this check (repeatable): {', '.join(CHECKS)}")

    g = subparsers.add_parser(
        "gc", help="delete finished runs (and their events, tasks, journal) older than a cutoff",
        description="Delete runs that finished before now - OLDER_THAN, with their events, human tasks and "
                    "step journal. A run and its child runs are deleted together, and only when all of them "
                    "are finished and old enough: active runs and their relatives are never touched.")
    g.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 2w")
    g.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    g.add_argument("--batch-size", type=int, default=500, help="run trees per transaction (500)")
    g.add_argument("--json", action="store_true")
    return {"doctor": cmd_doctor, "gc": cmd_gc}


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.doctor import run_checks

    checks = asyncio.run(run_checks(settings, only=args.check))
    failed = any(c.status == "fail" for c in checks)
    warned = any(c.status == "warn" for c in checks)
    code = EXIT_FAIL if failed or (args.strict and warned) else EXIT_OK
    if args.json:
        o.print_json({"ok": not failed, "exit_code": code, "checks": [
            {"name": c.name, "status": c.status, "summary": c.summary, "details": c.details, "facts": c.facts}
            for c in checks]})
        return code
    for c in checks:
        o.out.print(f"{_STYLE[c.status]} {c.name:<9} ", end="")
        o.out.print(c.summary, markup=False)
        for line in c.details:
            o.out.print(f"               - {line}", markup=False)
    o.err.print("[red]something required is broken[/]" if failed else
                "[yellow]working, with warnings[/]" if warned else "[green]all checks passed[/]")
    return code


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.gc import GcSummary, collect, parse_age
    from worker.store.pool import create_pool

    try:
        older_than = parse_age(args.older_than)
    except ValueError as exc:
        o.err.print(f"[red]usage:[/] {exc}")
        return EXIT_USAGE
    if args.batch_size < 1:
        o.err.print("[red]usage:[/] --batch-size must be at least 1")
        return EXIT_USAGE

    def progress(s: GcSummary) -> None:
        verb = "would delete" if s.dry_run else "deleted"
        where = f"batch {s.batches}" if s.batches else f"{len(s.partitions)} day(s) of run history"
        o.err.print(f"{where}: {verb} {s.runs} run(s), {s.events} event(s) so far")

    async def go() -> GcSummary:
        pool = await create_pool(settings.database_url, min_size=1, max_size=2, pooler=settings.database_pooler)
        try:
            return await collect(pool, older_than, dry_run=args.dry_run, batch_size=args.batch_size,
                                 progress=None if args.json else progress)
        finally:
            await pool.close()

    s = asyncio.run(go())
    if args.json:
        o.print_json({"dry_run": s.dry_run, "cutoff": s.cutoff.isoformat(), "runs": s.runs, "events": s.events,
                      "human_tasks": s.tasks, "journal_entries": s.journal, "run_trees": s.trees,
                      "kept_trees": s.kept_trees, "batches": s.batches, "workflow_events": s.workflow_events,
                      "workers": s.workers, "external_events": s.external_events,
                      "notifications": s.notifications, "partitions_dropped": s.partitions,
                      "partitions_pending": s.pending, "runs_moved": s.moved})
        return EXIT_OK
    verb = "would delete" if s.dry_run else "deleted"
    o.out.print(f"{verb} {s.runs} run(s) finished before {s.cutoff:%Y-%m-%d %H:%M:%S} UTC: {s.events} event(s), "
                f"{s.tasks} human task(s), {s.journal} journal entr(y/ies); {s.workflow_events} workflow "
                f"file event(s), {s.workers} stopped worker row(s), {s.external_events} outside event(s), "
                f"{s.notifications} worker.lost notification(s)")
    if s.partitions:
        o.out.print(f"{'would drop' if s.dry_run else 'dropped'} {len(s.partitions)} day(s) of run history whole: "
                    f"{', '.join(s.partitions)}")
    if s.pending:
        o.out.print(f"emptied {len(s.pending)} more day(s) ({', '.join(s.pending)}) whose detach is still waiting "
                    "for older transactions that used the events table (a long query, a session idle in a "
                    "transaction); the next gc finishes them")
    if s.moved:
        o.out.print(f"moved {s.moved} run(s) still active, or finished after the cutoff, from those days to today's "
                    "partition")
    if s.kept_trees:
        o.out.print(f"kept {s.kept_trees} old finished run(s) whose parent or child runs are still active or "
                    "finished after the cutoff")
    return EXIT_OK
