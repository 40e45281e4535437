"""`agentrt replay`, `agentrt audit` and bulk actions on `agentrt runs` (registered into worker.cli)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from worker import output as o
from worker.cli.support import json_arg as _json_arg
from worker.cli.support import with_client
from worker.errors import WorkerError
from worker.models import RunStatus


def register(sub: Any) -> dict[str, Any]:
    rp = sub.add_parser("replay", help="start a new run from an old one, reusing outputs before a step",
                        description="Steps before --from reuse their committed outputs; --from and everything "
                                    "that depends on it run again with new idempotency keys. Without --from: "
                                    "from the first step that did not complete (retry from the failed step).")
    rp.add_argument("run_id")
    rp.add_argument("--from", dest="from_step", default=None, metavar="STEP_ID")
    rp.add_argument("--input", type=_json_arg, default=None, metavar="JSON", help="inputs to change (merged)")
    rp.add_argument("--latest", action="store_true", help="use the current version of the workflow "
                                                          "(after a compatibility check)")
    rp.add_argument("--dry-run", action="store_true", help="print the plan; start nothing")
    rp.add_argument("--json", action="store_true")

    au = sub.add_parser("audit", help="list the audit trail of human actions; --verify checks its hash chain")
    au.add_argument("--run", default=None, metavar="RUN_ID")
    au.add_argument("--verify", action="store_true")
    au.add_argument("--limit", type=int, default=200)
    au.add_argument("--json", action="store_true")

    bk = sub.add_parser("bulk", help="cancel or retry every run matching a filter (dry-run count first)")
    bk.add_argument("action", choices=["cancel", "retry"])
    bk.add_argument("--status", choices=[s.value for s in RunStatus])
    bk.add_argument("--workflow")
    bk.add_argument("--limit", type=int, default=1000)
    bk.add_argument("--rate", type=float, default=20.0, help="actions per second (default 20)")
    bk.add_argument("--reason", default=None)
    bk.add_argument("--yes", action="store_true", help="do it (without: print how many runs match)")
    bk.add_argument("--json", action="store_true")
    return {"replay": with_client(cmd_replay), "audit": with_client(cmd_audit), "bulk": with_client(cmd_bulk)}


def _print_plan(plan: Any) -> None:
    o.out.print(f"replay of {plan.source_run} ({plan.workflow}, version {plan.def_hash[:12]})"
                + (f" from step {plan.from_step}" if plan.from_step else ""))
    o.out.print("  reused (not run again): " + (", ".join(plan.reused) or "-"))
    o.out.print("  run again:              " + (", ".join(plan.rerun) or "-"))
    if plan.external_calls:
        o.out.print("  external calls that fire again (new idempotency keys):")
        for c in plan.external_calls:
            times = f" x{c.items}" if c.items else ""
            o.out.print(f"    {c.step_id}: {c.kind} {c.detail}{times}", markup=False)
    for note in plan.notes:
        o.out.print(f"  note: {note}")


async def cmd_replay(client: Any, args: argparse.Namespace) -> int:
    from worker.oversight.replay import plan_as_dict

    if args.input is not None and not isinstance(args.input, dict):
        raise WorkerError("--input must be a JSON object")
    plan, new_id = await client.replay(args.run_id, from_step=args.from_step, inputs=args.input,
                                       latest=args.latest, dry_run=args.dry_run)
    if args.json:
        o.print_json({**plan_as_dict(plan), "new_run": new_id, "dry_run": args.dry_run})
        return 0
    _print_plan(plan)
    o.out.print("(dry run: nothing started)" if new_id is None else f"started {new_id}")
    return 0


async def cmd_audit(client: Any, args: argparse.Namespace) -> int:
    if args.verify:
        result = await client.verify_audit()
        if args.json:
            o.print_json(o.to_jsonable(result))
        elif result.ok:
            o.out.print(f"[green]audit trail intact[/]: {result.checked} record(s) verified")
        else:
            o.out.print(f"[red]audit trail broken[/] at record {result.broken_at}: {result.reason} "
                        f"({result.checked} record(s) verified before it)")
        return 0 if result.ok else 1
    recs = await client.audit_records(run_id=args.run, limit=args.limit)
    if args.json:
        o.print_json(o.to_jsonable(recs))
        return 0
    t = o.table("ID", "WHEN (UTC)", "WHO", "FROM", "ACTION", "OUTCOME", "RUN", "REASON")
    for r in recs:
        t.add_row(str(r.id), f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.origin or "-", r.action, r.outcome,
                  (r.run_id or "-")[:8], r.reason or "")
    o.out.print(t)
    if not recs:
        o.err.print("no audit records")
    return 0


async def cmd_bulk(client: Any, args: argparse.Namespace) -> int:
    from worker.cli.runs import run_filter

    filters = await run_filter(client, args)
    if not filters.as_dict():
        raise WorkerError("give at least one filter (--status, --workflow, --view, ...): bulk actions need one")
    runs = await client.matching_runs(filters=filters, limit=args.limit)
    if args.action == "cancel":
        runs = [r for r in runs if not r.status.terminal]
    else:
        runs = [r for r in runs if r.status.value in ("failed", "cancelled")]
    if args.action == "retry":
        return await _bulk_retry(client, args, runs)
    if not args.yes:
        if args.json:
            o.print_json({"action": args.action, "matching": len(runs), "dry_run": True})
        else:
            o.out.print(f"{len(runs)} run(s) would be cancelled; add --yes to do it")
        return 0
    async def cancel(run: Any) -> dict[str, Any]:
        try:
            await client.cancel(run.run_id, reason=args.reason)
        except WorkerError as exc:
            return {"run_id": run.run_id, "error": str(exc)}
        return {"run_id": run.run_id}

    started = time.monotonic()
    done, failed = await _paced(runs, cancel, rate=args.rate, progress=not args.json)
    summary = {"action": args.action, "matching": len(runs), "succeeded": len(done), "failed": len(failed),
               "seconds": round(time.monotonic() - started, 2), "results": done, "errors": failed}
    if args.json:
        o.print_json(summary)
    else:
        o.out.print(f"{args.action}: {len(done)} succeeded, {len(failed)} failed")
        for f in failed:
            o.out.print(f"  {f['run_id']}: {f['error']}", markup=False)
    return 0 if not failed else 1


async def _bulk_retry(client: Any, args: argparse.Namespace, runs: list[Any]) -> int:
    """`agentrt runs --retry`: counts per version first (dry run without --yes), then one retry per run, paced."""
    options = await client.retry_options([r.run_id for r in runs])
    plan = [(opt, opt.choose(args.version)) for opt in options]
    skipped = [{"run_id": opt.run_id, "reason": opt.problem or "cannot be retried"} for opt, v in plan if v is None]
    per_version: dict[str, int] = {}
    for opt, version in plan:
        if version is not None:
            label = f"current {(opt.current_version or '')[:12]}" if version == "current" and opt.changed else \
                f"its own {opt.run_version[:12]}"
            per_version[label] = per_version.get(label, 0) + 1
    todo = [opt for opt, v in plan if v is not None]
    if not args.yes:
        if args.json:
            o.print_json({"action": "retry", "matching": len(runs), "dry_run": True, "version": args.version,
                          "per_version": per_version, "skipped": skipped})
        else:
            o.out.print(f"{len(todo)} run(s) would be retried; add --yes to do it", markup=False)
            for label, n in sorted(per_version.items()):
                o.out.print(f"  {n} under {'the ' + label if label.startswith('current') else label} version",
                            markup=False)
            for s in skipped:
                o.out.print(f"  skipped {s['run_id'][:8]}: {s['reason']}", markup=False)
        return 0
    async def retry(opt: Any) -> dict[str, Any]:
        result = await client.retry(opt.run_id, args.version)
        if result.new_run is None:
            return {"run_id": opt.run_id, "error": result.skipped or "not retried"}
        return {"run_id": opt.run_id, "new_run": result.new_run, "version": result.version,
                "def_hash": result.def_hash}

    started = time.monotonic()
    done, failed = await _paced(todo, retry, rate=args.rate, progress=not args.json)
    summary = {"action": "retry", "matching": len(runs), "succeeded": len(done), "failed": len(failed),
               "skipped": skipped, "per_version": per_version, "seconds": round(time.monotonic() - started, 2),
               "results": done, "errors": failed}
    if args.json:
        o.print_json(summary)
    else:
        versions = ", ".join(f"{n} under {label}" for label, n in sorted(per_version.items()))
        o.out.print(f"retry: {len(done)} succeeded ({versions}), {len(failed)} failed, {len(skipped)} skipped",
                    markup=False)
        for f in failed:
            o.out.print(f"  {f['run_id']}: {f['error']}", markup=False)
        for s in skipped:
            o.out.print(f"  skipped {s['run_id'][:8]}: {s['reason']}", markup=False)
    return 0 if not failed else 1


async def _paced(items: list[Any], act: Callable[[Any], Awaitable[dict[str, Any]]], *, rate: float,
                 progress: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`act` on each item at most `rate` per second, with progress on stderr; (results, those with an `error`)."""
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    interval = 1.0 / rate if rate > 0 else 0.0
    for i, item in enumerate(items, 1):
        t0 = time.monotonic()
        result = await act(item)
        (failed if "error" in result else done).append(result)
        if progress and (i % 10 == 0 or i == len(items)):
            sys.stderr.write(f"\r{i}/{len(items)} ({len(failed)} failed)")
            sys.stderr.flush()
        wait = interval - (time.monotonic() - t0)
        if wait > 0:
            await asyncio.sleep(wait)
    if progress and items:
        sys.stderr.write("\n")
    return done, failed
