"""`agentrt`: the parser, logging set-up and dispatch (see README, Command line)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from worker import output as o
from worker.cli.local import cmd_console, cmd_dev, cmd_migrate, cmd_validate, cmd_worker
from worker.cli.runs import (
    cmd_approvals,
    cmd_approve,
    cmd_cancel,
    cmd_reject,
    cmd_resolve,
    cmd_run,
    cmd_runs,
    cmd_show,
    cmd_workers,
    cmd_workflows,
)
from worker.cli.support import (
    EXIT_CONFLICT,
    EXIT_DENIED,
    EXIT_FAIL,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    with_client,
)
from worker.cli.support import json_arg as _json_arg
from worker.config import Settings
from worker.errors import (
    ConfigError,
    Conflict,
    NotFound,
    PermissionDenied,
    StoreError,
    WorkerError,
)
from worker.models import RunStatus


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
    r.add_argument("--priority", choices=["high", "normal", "low"], default=None,
                   help="under contention for workers, high goes first (default: the workflow's priority:)")
    r.add_argument("--json", action="store_true")

    rs = sub.add_parser("runs", help="list runs, newest first")
    rs.add_argument("--status", choices=[*(s.value for s in RunStatus), "retrying"],
                    help="only runs in this status; `retrying`: backing off between attempts of a step")
    rs.add_argument("--workflow")
    rs.add_argument("--step", default=None,
                    help="only runs on this step now (looks at the newest 10,000 runs the other flags match)")
    rs.add_argument("--error", default=None, metavar="TEXT",
                    help="only runs whose error contains TEXT (looks at the newest 10,000 runs the other flags "
                         "match: add --status, --workflow or --since to reach older ones)")
    rs.add_argument("--since", default=None, metavar="DURATION", help="only runs started within, e.g. 30m, 4h, 2d")
    rs.add_argument("--waiting-on", default=None, metavar="WHAT",
                    help="only runs waiting on human, event, retry, sleep, child, throttled, or on a person "
                         "(or group:NAME) who may decide one of their pending tasks")
    rs.add_argument("--view", default=None, metavar="NAME", help="start from a saved view (flags narrow it)")
    rs.add_argument("--save-view", default=None, metavar="NAME",
                    help="save these filters as a view everyone can use (agentrt views; the console's :view NAME)")
    rs.add_argument("--limit", type=int, default=50)
    rs.add_argument("--json", action="store_true")
    bulk = rs.add_mutually_exclusive_group()
    bulk.add_argument("--cancel", action="store_true", help="cancel every matching unfinished run (needs --yes)")
    bulk.add_argument("--retry", action="store_true",
                      help="replay every matching failed/cancelled run from its failed step (needs --yes)")
    rs.add_argument("--yes", action="store_true", help="with --cancel/--retry: do it (default: count only)")
    rs.add_argument("--rate", type=float, default=20.0, help="with --cancel/--retry: actions per second")
    rs.add_argument("--reason", default=None, help="with --cancel: why (audited)")
    rs.add_argument("--version", choices=["auto", "run", "current"], default="auto",
                    help="with --retry: the workflow version each retry runs under: `run` (the one it started "
                         "with), `current` (the file as it is now; runs it cannot take over are skipped), `auto` "
                         "(default: current when the file changed since the run started and the check passes)")

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
EXTENSION_MODULES = ("worker.secrets.cli", "worker.telemetry.cli", "worker.oversight.cli", "worker.ops.cli",
                     "worker.api.cli", "worker.events.cli", "worker.schedules.cli",
                     "worker.limits.cli", "worker.notify.cli", "worker.pauses.cli",
                     "worker.search.cli", "worker.streams.cli")


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
