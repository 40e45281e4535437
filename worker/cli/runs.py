"""The commands that read and act on runs, tasks, workflows and workers through RuntimeClient."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text

from worker import output as o
from worker.cli.support import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from worker.errors import (
    WorkerError,
)
from worker.search.filters import RunFilter


async def cmd_run(client: Any, args: argparse.Namespace) -> int:
    if not isinstance(args.input, dict):
        raise WorkerError("--input must be a JSON object")
    traceparent = getattr(args, "traceparent", None) or os.environ.get("TRACEPARENT") or None
    started = await client.start(args.workflow, args.input, traceparent=traceparent,
                                 priority=getattr(args, "priority", None))
    run_id = started.run_id
    if not args.wait:
        if args.json:
            o.print_json({"run_id": run_id, "workflow": args.workflow, "status": started.status})
        else:
            o.out.print(run_id)
            if started.status != "pending":  # stdout stays the id alone, for scripts
                o.err.print(f"the run is {started.status} (its concurrency key): agentrt show {run_id[:8]}",
                            markup=False)
        return EXIT_OK
    summary = await client.wait_for_run(run_id, timeout=args.timeout)
    detail = await client.get_run(run_id)
    if args.json:
        o.print_json({"run_id": run_id, "workflow": args.workflow, "status": summary.status.value,
                      "output": detail.output, "error": summary.error})
    else:
        o.out.print(f"{run_id} {o.status_text(summary.status.value)}")
        if summary.error:
            o.out.print(f"error: {summary.error}", markup=False)
        else:
            o.out.print(o.compact(detail.output, 2000), markup=False)
    return EXIT_OK if summary.status.value == "completed" else EXIT_FAIL


async def run_filter(client: Any, args: argparse.Namespace) -> RunFilter:
    """The filters of `agentrt runs`: a saved view (`--view`) narrowed by the flags; saved with `--save-view`."""
    flags = RunFilter(workflow=args.workflow, status=args.status, step=getattr(args, "step", None),
                      error=getattr(args, "error", None), since=getattr(args, "since", None),
                      waiting=getattr(args, "waiting_on", None))
    view = getattr(args, "view", None)
    filters = (await client.get_view(view)).filters.merged(flags) if view else flags
    if getattr(args, "save_view", None):
        saved = await client.save_view(args.save_view, filters)
        o.err.print(f"saved view {saved.name}: {saved.filters.describe()}", markup=False)
    return filters


async def cmd_runs(client: Any, args: argparse.Namespace) -> int:
    if args.cancel or args.retry:
        from worker.oversight.cli import cmd_bulk

        args.action = "cancel" if args.cancel else "retry"
        args.limit = max(args.limit, 1000) if args.limit == 50 else args.limit
        return await cmd_bulk(client, args)
    filters = await run_filter(client, args)
    runs = await client.list_runs(filters=filters, limit=args.limit)
    replica = await client.read_replica()  # None without AGENTRT_DATABASE_READ_URL
    if replica is not None:  # a replica shows the past: say how far, on stderr (stdout stays the listing)
        o.err.print(f"({replica.text()})", markup=False)
    if args.json:
        o.print_json([{**o.to_jsonable(r), "duration_s": r.duration_s} for r in runs])
        return EXIT_OK
    t = o.table("RUN", "WORKFLOW", "STATUS", "STEP", "TRIGGER", "STARTED", "DURATION")
    for r in runs:
        marker = ""
        if r.paused is not None:
            marker = f" [magenta]⏯ {escape(o.pause_text(r.paused))}[/]"
        elif r.waiting_on and r.waiting_on.startswith("retry"):
            marker = f" [yellow]↻ {escape(o.retry_text(r))}[/]"
        elif r.waiting_on == "human":
            until = f", deadline {o.ago(r.wake_at)}" if r.wake_at is not None else ""
            marker = f" [yellow]⏸ human: {escape(r.waiting_for or 'anyone')}{until}[/]"
        elif r.waiting_on and r.waiting_on.startswith("throttled: "):
            marker = f" [yellow]◷ {escape(r.waiting_on)}[/]"
        elif r.waiting_on and r.waiting_on.startswith("event "):
            until = f", deadline {o.ago(r.wake_at)}" if r.wake_at is not None else ""
            marker = f" [yellow]⏸ {escape(r.waiting_on)}{until}[/]"
        elif r.waiting_on == "sleep":
            marker = f" [yellow]◷ timer, wakes {o.ago(r.wake_at)}[/]" if r.wake_at else " [yellow]◷ timer[/]"
        elif r.waiting_on == "child":
            marker = " [yellow]◷ a child run[/]"
        elif r.status.value == "queued" and r.concurrency_key is not None:
            marker = f" [dim]key {escape(r.concurrency_key)}[/]"
        t.add_row(r.run_id[:8], r.workflow, o.status_text(r.status.value) + marker, r.current_step or "-",
                  r.trigger or "manual", o.ago(r.created_at), o.duration(r.duration_s))
    o.out.print(t)
    if not runs:
        o.err.print("no runs")
    return EXIT_OK


async def cmd_show(client: Any, args: argparse.Namespace) -> int:
    from worker.engine.views import run_usage

    d = await client.get_run(args.run_id)
    usage = run_usage(d.steps)
    if args.json:
        data = o.to_jsonable(d)
        if isinstance(data, dict):
            data["usage"] = usage
        o.print_json(data)
        return EXIT_OK
    s = d.summary
    o.out.print(f"[bold]{s.run_id}[/]  {s.workflow} (version {s.def_hash[:12]})  {o.status_text(s.status.value)}")
    o.out.print(f"started {s.created_at:%Y-%m-%d %H:%M:%S} UTC by {s.trigger or 'a person'}, "
                f"duration {o.duration(s.duration_s)}", markup=False)
    if s.status.value == "waiting" and s.waiting_on:
        until = "" if s.wake_at is None else f" until {s.wake_at:%Y-%m-%d %H:%M:%S} UTC ({o.ago(s.wake_at)})"
        whom = f" ({s.waiting_for})" if s.waiting_for else ""
        if s.waiting_on.startswith("retry"):
            o.out.print(o.retry_text(s, limit=500), markup=False)
        else:
            o.out.print(f"waiting on {s.waiting_on}{whom}{until}", markup=False)
    if s.paused is not None:
        o.out.print(o.pause_text(s.paused) + (" (steps in flight interrupted)" if s.paused.now else ""),
                    markup=False)
    if d.queue is not None:
        o.out.print(d.queue.describe(), markup=False)
    if s.priority != "normal" or s.concurrency_key is not None:
        key = "" if s.concurrency_key is None else f", concurrency key {s.concurrency_key}"
        o.out.print(f"priority {s.priority}{key}", markup=False)
    if s.parent_run_id:
        o.out.print(f"parent run {s.parent_run_id}")
    o.out.print(f"inputs: {o.compact(d.inputs)}", markup=False)
    columns = ["STEP", "KIND", "STATUS", "ATTEMPTS"] + (["TOKENS", "COST"] if usage["steps"] else [])
    t = o.table(*columns, "OUTPUT / ERROR")
    for st in d.steps:
        name = st.step_id if st.item is None else f"  {st.step_id}[{st.item}]"
        detail = st.error if st.error else ("" if st.output is None else o.compact(st.output, 80))
        row = [name, st.kind, o.status_text(st.status.value), str(len(st.attempts))]
        if usage["steps"]:
            used = st.usage
            row += ["", ""] if used is None else [
                f"{used['total_tokens']:,}", "-" if used["cost_usd"] is None else f"${used['cost_usd']:.4f}"]
        t.add_row(*row, detail)
    o.out.print(t)
    if usage["steps"]:
        cost = f"${usage['cost_usd']:.4f}" + ("" if usage["priced"] else " (some models have no price)")
        o.out.print(f"tokens: {usage['total_tokens']:,} (input {usage['input_tokens']:,}, output "
                    f"{usage['output_tokens']:,}) in {usage['steps']} llm/agent step(s); cost {cost}", markup=False)
    if d.children:
        o.out.print("children: " + ", ".join(d.children))
    if s.error:
        o.out.print(f"[red]error:[/] {s.error}")
    elif s.status.value == "completed":
        o.out.print(f"output: {o.compact(d.output, 2000)}", markup=False)
    if args.events:
        et = o.table("SEQ", "TIME", "EVENT", "STEP", "ATTEMPT", "DATA")
        for e in d.events:
            et.add_row(str(e.seq), f"{e.ts:%H:%M:%S.%f}"[:-3], e.type,
                       (e.step_id or "") + ("" if e.item is None else f"[{e.item}]"),
                       "" if e.attempt is None else str(e.attempt), o.compact(e.data, 80))
        o.out.print(et)
    return EXIT_OK


async def cmd_approvals(client: Any, args: argparse.Namespace) -> int:
    tasks = await client.list_tasks(status=None if args.all else "pending")
    if args.json:
        o.print_json(o.to_jsonable(tasks))
        return EXIT_OK
    t = o.table("TASK", "KIND", "RUN", "WORKFLOW", "STEP", "STATUS", "DEADLINE", "PROMPT")
    for k in tasks:
        t.add_row(k.task_id[:8], k.kind, k.run_id[:8], k.workflow, k.step_id, o.status_text(k.status.value),
                  o.ago(k.deadline) if k.deadline else "-", k.prompt)
    o.out.print(t)
    if not tasks:
        o.err.print("no pending human tasks")
    return EXIT_OK


def _print_task(task: Any, as_json: bool) -> None:
    if as_json:
        o.print_json(o.to_jsonable(task))
    else:
        o.out.print(f"task {task.task_id} {o.status_text(task.status.value)} by {task.decided_by}"
                    + (f": {task.reason}" if task.reason else ""))


async def cmd_approve(client: Any, args: argparse.Namespace) -> int:
    _print_task(await client.decide(args.task_id, approve=True, reason=args.reason), args.json)
    return EXIT_OK


async def cmd_reject(client: Any, args: argparse.Namespace) -> int:
    _print_task(await client.decide(args.task_id, approve=False, reason=args.reason), args.json)
    return EXIT_OK


async def cmd_resolve(client: Any, args: argparse.Namespace) -> int:
    action = "retry" if args.retry else "done" if args.done else "fail"
    _print_task(await client.resolve(args.task_id, action=action, output=args.output, reason=args.reason),
                args.json)
    return EXIT_OK


async def cmd_cancel(client: Any, args: argparse.Namespace) -> int:
    s = await client.cancel(args.run_id, reason=args.reason)
    if args.json:
        o.print_json({"run_id": s.run_id, "cancel_requested": True})
    else:
        o.out.print(f"cancel requested for {s.run_id}")
    return EXIT_OK


async def cmd_workflows(client: Any, args: argparse.Namespace) -> int:
    if args.versions:
        return await _workflow_versions(client, args)
    if args.diff:
        return await _workflow_diff(client, args)
    if args.history:
        return await _workflow_history(client, args)
    wfs = await client.list_workflows()
    if args.json:
        o.print_json(o.to_jsonable(wfs))
        return EXIT_OK
    t = o.table("WORKFLOW", "STATUS", "VERSION", "VERSIONS", "FILE", "ERROR")
    for w in wfs:
        loc = ""
        if w.error:
            loc = Path(w.path).name + "".join(f":{x}" for x in (w.error_line, w.error_column) if x is not None)
            loc = f"{loc}: {w.error}"
        t.add_row(w.name or "?", o.status_text(w.status), (w.def_hash or "-")[:12], str(w.versions), w.path, loc)
    o.out.print(t)
    if not wfs:
        o.err.print("no workflow files known yet: start a worker (agentrt worker) on your workflows directory")
    return EXIT_OK


async def _workflow_versions(client: Any, args: argparse.Namespace) -> int:
    versions = await client.workflow_versions(args.versions, limit=args.limit)
    if args.json:
        o.print_json(o.to_jsonable(versions))
        return EXIT_OK
    t = o.table("VERSION", "LOADED", "RUNS", "ACTIVE", "FILE")
    for v in versions:
        t.add_row(v.def_hash[:12], f"{v.created_at:%Y-%m-%d %H:%M:%S}Z ({o.ago(v.created_at)})", str(v.runs),
                  "[green]active[/]" if v.active else "", Text(v.source_path or "-"))
    o.out.print(t)
    return EXIT_OK


async def _workflow_diff(client: Any, args: argparse.Namespace) -> int:
    if len(args.diff) > 3:
        o.err.print("usage: agentrt workflows --diff NAME [OLD [NEW]]")
        return EXIT_USAGE
    name, old, new = (*args.diff, None, None)[:3]
    diff = await client.workflow_diff(name, old, new)
    if args.json:
        o.print_json({"workflow": name, "old": old, "new": new, "diff": diff})
        return EXIT_OK
    if not diff:
        o.err.print("the two versions have the same YAML source")
        return EXIT_OK
    styles = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))
    for line in diff.splitlines():
        o.out.print(Text(line, style=next((s for p, s in styles if line.startswith(p)), "")))
    return EXIT_OK


async def _workflow_history(client: Any, args: argparse.Namespace) -> int:
    events = await client.workflow_events(limit=args.limit)
    if args.json:
        o.print_json(o.to_jsonable(events))
        return EXIT_OK
    t = o.table("AT", "KIND", "WORKFLOW", "VERSION", "FILE", "ERROR")
    for e in events:
        kind = Text(e.kind, style={"loaded": "green", "invalid": "red", "deleted": "dim"}.get(e.kind, ""))
        t.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}Z", kind, Text(e.name or "-"), (e.def_hash or "-")[:12], Text(e.path),
                  Text(e.error or "", style="red"))
    o.out.print(t)
    if not events:
        o.err.print("no workflow file has been loaded yet")
    return EXIT_OK


async def cmd_workers(client: Any, args: argparse.Namespace) -> int:
    workers = await client.list_workers()
    if args.json:
        o.print_json(o.to_jsonable(workers))
        return EXIT_OK
    t = o.table("WORKER", "HOST", "PID", "ALIVE", "HEARTBEAT", "HOLDS")
    for w in workers:
        t.add_row(w.worker_id, w.hostname, str(w.pid), "[green]yes[/]" if w.alive else "[dim]no[/]",
                  o.ago(w.heartbeat_at), str(len(w.held_runs)))
    o.out.print(t)
    return EXIT_OK
