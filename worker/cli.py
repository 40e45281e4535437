"""`agentrt`: the one command-line entry point (see README, Command line)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from rich.text import Text

from worker import output as o
from worker.config import Settings
from worker.errors import (
    ConfigError,
    Conflict,
    DefinitionError,
    NotFound,
    PermissionDenied,
    StoreError,
    WorkerError,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_DENIED = 0, 1, 2, 3, 4, 5, 6


def _json_arg(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentrt",
        description="AgentRuntime: durable, observable AI-agent workflows. Configuration comes from the "
                    "environment: AGENTRT_DATABASE_URL, AGENTRT_REDIS_URL, AGENTRT_WORKFLOWS_DIR, VAULT_ADDR, ...",
        epilog="Run `agentrt COMMAND --help` for the options of a command.",
    )
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("dev", help="start Postgres, Redis and OpenBao from wheels, a worker and the console")
    d.add_argument("--data-dir", type=Path, default=Path(".agentrt"), help="where the embedded servers keep data")
    d.add_argument("--workflows", type=Path, default=None, help="workflows directory (default: ./workflows)")
    d.add_argument("--no-console", action="store_true", help="do not open the console; run until Ctrl-C")

    w = sub.add_parser("worker", help="run a worker: execute workflows from the work stream")
    w.add_argument("--workflows", type=Path, default=None, help="workflows directory (AGENTRT_WORKFLOWS_DIR)")
    w.add_argument("--concurrency", type=int, default=None, help="runs held at once (AGENTRT_CONCURRENCY, 200)")
    w.add_argument("--no-watch", action="store_true", help="do not hot-reload workflow files")

    c = sub.add_parser("console", help="open the operations console (Textual TUI)")
    c.add_argument("--readonly", action="store_true", help="hide and refuse every action")

    r = sub.add_parser("run", help="start a run of a workflow")
    r.add_argument("workflow")
    r.add_argument("--input", type=_json_arg, default={}, metavar="JSON", help='run inputs, e.g. \'{"id": 7}\'')
    r.add_argument("--wait", action="store_true", help="wait until the run finishes; exit 1 if it fails")
    r.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    r.add_argument("--traceparent", default=None, metavar="HEADER",
                   help="W3C trace context: the run's trace joins the caller's (default: $TRACEPARENT)")
    r.add_argument("--json", action="store_true")

    rs = sub.add_parser("runs", help="list runs, newest first")
    rs.add_argument("--status", choices=["pending", "running", "waiting", "completed", "failed", "cancelled"])
    rs.add_argument("--workflow")
    rs.add_argument("--limit", type=int, default=50)
    rs.add_argument("--json", action="store_true")
    bulk = rs.add_mutually_exclusive_group()
    bulk.add_argument("--cancel", action="store_true", help="cancel every matching unfinished run (needs --yes)")
    bulk.add_argument("--retry", action="store_true",
                      help="replay every matching failed/cancelled run from its failed step (needs --yes)")
    rs.add_argument("--yes", action="store_true", help="with --cancel/--retry: do it (default: count only)")
    rs.add_argument("--rate", type=float, default=20.0, help="with --cancel/--retry: actions per second")
    rs.add_argument("--reason", default=None, help="with --cancel: why (audited)")

    s = sub.add_parser("show", help="show a run: steps, attempts, inputs, outputs, events")
    s.add_argument("run_id", help="run id or a unique prefix of it")
    s.add_argument("--events", action="store_true", help="also print the event log")
    s.add_argument("--json", action="store_true")

    a = sub.add_parser("approvals", help="list pending human tasks (approvals, uncertain effects)")
    a.add_argument("--all", action="store_true", help="include decided tasks")
    a.add_argument("--json", action="store_true")

    ap = sub.add_parser("approve", help="approve a pending approval task")
    ap.add_argument("task_id")
    ap.add_argument("--reason", default=None)
    ap.add_argument("--json", action="store_true")

    rj = sub.add_parser("reject", help="reject a pending approval task (a reason is required)")
    rj.add_argument("task_id")
    rj.add_argument("--reason", required=True)
    rj.add_argument("--json", action="store_true")

    rv = sub.add_parser("resolve", help="settle an uncertain-effect task: retry, mark done, or fail")
    rv.add_argument("task_id")
    g = rv.add_mutually_exclusive_group(required=True)
    g.add_argument("--retry", action="store_true", help="run the call again with the same idempotency key")
    g.add_argument("--done", action="store_true", help="the effect happened: continue with --output")
    g.add_argument("--fail", action="store_true", help="fail the step (and the run)")
    rv.add_argument("--output", type=_json_arg, default=None, metavar="JSON", help="step output for --done")
    rv.add_argument("--reason", default=None)
    rv.add_argument("--json", action="store_true")

    cn = sub.add_parser("cancel", help="cancel a run (stops at once; running steps are interrupted)")
    cn.add_argument("run_id")
    cn.add_argument("--reason", default=None)
    cn.add_argument("--json", action="store_true")

    wf = sub.add_parser("workflows", help="list workflow files: active versions and validation errors",
                        description="List workflow files; or one workflow's versions, the diff of two of its "
                                    "versions, or the hot-reload history.")
    one = wf.add_mutually_exclusive_group()
    one.add_argument("--versions", metavar="NAME", default=None,
                     help="the stored versions of workflow NAME, newest first, with the runs pinned to each")
    one.add_argument("--diff", nargs="+", metavar=("NAME", "HASH"), default=None,
                     help="NAME [OLD [NEW]]: unified diff of the YAML of two versions (hashes or unique prefixes; "
                          "default: the version before the active one, against the active one)")
    one.add_argument("--history", action="store_true",
                     help="hot reloads, newest first: files loaded, found invalid (with the error) or deleted")
    wf.add_argument("--limit", type=int, default=50, help="rows for --versions and --history (default 50)")
    wf.add_argument("--json", action="store_true")

    v = sub.add_parser("validate", help="validate workflow files without running them")
    v.add_argument("paths", nargs="+", type=Path)
    v.add_argument("--json", action="store_true")

    wk = sub.add_parser("workers", help="list workers: heartbeats and the runs they hold")
    wk.add_argument("--json", action="store_true")

    sub.add_parser("migrate", help="apply database schema migrations")
    for module in _extensions():
        COMMANDS.update(module.register(sub))
    return p


# Subsystems add their own commands: a module with `register(subparsers) -> {name: handler}`,
# where a handler is `(args, settings) -> exit code` (see `with_client` for async ones).
EXTENSION_MODULES = ("worker.secrets.cli", "worker.telemetry.cli", "worker.oversight.cli", "worker.ops.cli")


def _extensions() -> list[Any]:
    import importlib
    import importlib.util

    found = []
    for name in EXTENSION_MODULES:
        parent = name.rsplit(".", 1)[0]
        if importlib.util.find_spec(parent) is None or importlib.util.find_spec(name) is None:
            continue
        found.append(importlib.import_module(name))
    return found


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings.from_env()
    if getattr(args, "workflows", None) is not None:
        s = replace(s, workflows_dir=args.workflows)
    if getattr(args, "concurrency", None) is not None:
        s = replace(s, concurrency=args.concurrency)
    return s


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("AGENTRT_LOG_FORMAT", "json").strip().lower() == "json":
        # one JSON object per line, with run, step, attempt, trace and span ids where known
        from worker.telemetry.logging import install_json_logging

        install_json_logging(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("asyncio", "httpx", "httpcore", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        o.err.print(f"[red]configuration error:[/] {exc}")
        return EXIT_USAGE
    configure_logging(args.log_level or settings.log_level if args.command in ("worker", "dev") else
                      (args.log_level or "WARNING"))
    handler: Callable[[argparse.Namespace, Settings], int] = COMMANDS[args.command]
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except NotFound as exc:
        o.err.print(f"[red]not found:[/] {exc}")
        return EXIT_NOT_FOUND
    except Conflict as exc:
        o.err.print(f"[red]conflict:[/] {exc}")
        return EXIT_CONFLICT
    except PermissionDenied as exc:
        o.err.print(f"[red]permission denied:[/] {exc}")
        return EXIT_DENIED
    except ConfigError as exc:
        o.err.print(f"[red]configuration error:[/] {exc}")
        return EXIT_USAGE
    except StoreError as exc:
        o.err.print(f"[red]database unavailable:[/] {exc}")
        return EXIT_UNAVAILABLE
    except WorkerError as exc:
        o.err.print(f"[red]error:[/] {exc}")
        return EXIT_FAIL
    except (OSError, ConnectionError) as exc:
        o.err.print(f"[red]unavailable:[/] {exc}")
        return EXIT_UNAVAILABLE


Handler = Callable[[argparse.Namespace, Settings], int]


def with_client(fn: Callable[[Any, argparse.Namespace], Awaitable[int]]) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        async def go() -> int:
            from worker.client import RuntimeClient

            client = await RuntimeClient.connect(settings)
            try:
                return await fn(client, args)
            finally:
                await client.close()

        return asyncio.run(go())

    return handler


# -- commands ------------------------------------------------------------------------------

def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.engine.service import WorkerService
    from worker.secrets.identity import make_undumpable

    make_undumpable()  # its memory (the Vault token) is not readable by other processes of the same user

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = WorkerService(settings, watch=not args.no_watch)
        await service.run_until(stop)
        return EXIT_OK

    return asyncio.run(go())


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.store.migrate import migrate

    applied = asyncio.run(migrate(settings.database_url))
    o.err.print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.boundary import load_checks
    from worker.definitions.loader import load_file, load_tools_file
    from worker.definitions.registry import RESERVED_NAMES

    checks = load_checks(settings)  # what this deployment allows workflow files to reach

    results: list[dict[str, Any]] = []
    for path in args.paths:
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for f in files:
            try:
                if f.name in RESERVED_NAMES:  # the shared MCP servers / prices file
                    tools = load_tools_file(f)
                    results.append({"path": str(f), "ok": True, "name": f"shared tools: {len(tools.servers)} "
                                    f"server(s), {len(tools.pricing)} price(s)", "version": "-"})
                    continue
                defn = load_file(f, checks=checks)
                results.append({"path": str(f), "ok": True, "name": defn.name, "version": defn.def_hash[:12]})
            except DefinitionError as exc:
                results.append({"path": str(f), "ok": False, "error": exc.reason, "line": exc.line,
                                "column": exc.column, "excerpt": exc.excerpt})
    if args.json:
        o.print_json(results)
    else:
        for r in results:
            if r["ok"]:
                o.out.print(f"[green]ok[/]   {r['path']}  ({r['name']}, version {r['version']})")
            else:
                loc = r["path"] + "".join(f":{r[k]}" for k in ("line", "column") if r[k] is not None)
                o.out.print(f"[red]error[/] {loc}: {r['error']}")
                if r["excerpt"]:
                    o.out.print(f"      {r['excerpt'].rstrip()}", markup=False)
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_FAIL


async def cmd_run(client: Any, args: argparse.Namespace) -> int:
    if not isinstance(args.input, dict):
        raise WorkerError("--input must be a JSON object")
    traceparent = getattr(args, "traceparent", None) or os.environ.get("TRACEPARENT") or None
    run_id = await client.start_run(args.workflow, args.input, traceparent=traceparent)
    if not args.wait:
        if args.json:
            o.print_json({"run_id": run_id, "workflow": args.workflow, "status": "pending"})
        else:
            o.out.print(run_id)
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


async def cmd_runs(client: Any, args: argparse.Namespace) -> int:
    if args.cancel or args.retry:
        from worker.oversight.cli import cmd_bulk

        args.action = "cancel" if args.cancel else "retry"
        args.limit = max(args.limit, 1000) if args.limit == 50 else args.limit
        return await cmd_bulk(client, args)
    runs = await client.list_runs(status=args.status, workflow=args.workflow, limit=args.limit)
    if args.json:
        o.print_json([{**o.to_jsonable(r), "duration_s": r.duration_s} for r in runs])
        return EXIT_OK
    t = o.table("RUN", "WORKFLOW", "STATUS", "STEP", "STARTED", "DURATION")
    for r in runs:
        marker = " [yellow]⏸ human[/]" if r.waiting_on == "human" else ""
        t.add_row(r.run_id[:8], r.workflow, o.status_text(r.status.value) + marker, r.current_step or "-",
                  o.ago(r.created_at), o.duration(r.duration_s))
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
    o.out.print(f"started {s.created_at:%Y-%m-%d %H:%M:%S} UTC, duration {o.duration(s.duration_s)}")
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


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    cmd = [sys.executable, "-m", "console"] + (["--readonly"] if args.readonly else [])
    return subprocess.call(cmd)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from worker.devrun import run_dev

    return run_dev(args.data_dir, args.workflows or Path("workflows"), console=not args.no_console)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "dev": cmd_dev,
    "worker": cmd_worker,
    "console": cmd_console,
    "migrate": cmd_migrate,
    "validate": cmd_validate,
    "run": with_client(cmd_run),
    "runs": with_client(cmd_runs),
    "show": with_client(cmd_show),
    "approvals": with_client(cmd_approvals),
    "approve": with_client(cmd_approve),
    "reject": with_client(cmd_reject),
    "resolve": with_client(cmd_resolve),
    "cancel": with_client(cmd_cancel),
    "workflows": with_client(cmd_workflows),
    "workers": with_client(cmd_workers),
}
