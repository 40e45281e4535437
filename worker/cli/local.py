"""The commands that run something here: worker, migrate, validate, console, dev."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

from worker import output as o
from worker.cli.support import EXIT_FAIL, EXIT_OK
from worker.config import Settings
from worker.errors import (
    DefinitionError,
)
from worker.loops import event_loop_factory

GC_THRESHOLDS = (20_000, 20, 50)
"""The worker's collector thresholds (Python's are 700, 10, 10). A worker allocates a few hundred short-lived
objects per step and keeps every run it drives in memory, so with the defaults the collector ran a young
collection every few steps and full ones often, over every object of the process: about a quarter of the
worker's CPU per step under the engine benchmark (bench/README.md). Cycles are rare on the hot path (events,
states and rows are trees); what does form one is still collected, only in larger batches."""


def tune_gc(setting: str) -> None:
    """`AGENTRT_GC_THRESHOLDS`: empty for GC_THRESHOLDS, `python` for Python's defaults, or three integers.
    Everything loaded at start (modules, the definitions) is frozen out of the collector's scans."""
    setting = setting.strip().lower()
    if setting == "python":
        return
    thresholds = GC_THRESHOLDS
    if setting:
        try:
            a, b, c = (int(x) for x in setting.replace(" ", "").split(","))
        except ValueError:
            raise SystemExit(f"AGENTRT_GC_THRESHOLDS: expected 'python' or three integers like 20000,20,50, "
                             f"got {setting!r}") from None
        thresholds = (a, b, c)
    gc.set_threshold(*thresholds)
    gc.freeze()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.engine.service import WorkerService
    from worker.secrets.identity import make_undumpable

    make_undumpable()  # its memory (the Vault token) is not readable by other processes of the same user
    tune_gc(os.environ.get("AGENTRT_GC_THRESHOLDS", ""))

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = WorkerService(settings, watch=not args.no_watch)
        await service.run_until(stop)
        return EXIT_OK

    with asyncio.Runner(loop_factory=event_loop_factory(os.environ.get("AGENTRT_EVENT_LOOP", ""))) as runner:
        return runner.run(go())


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.store.migrate import migrate

    applied = asyncio.run(migrate(settings.database_url, pooler=settings.database_pooler))
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
                if f.name.startswith("notify.") and f.name in RESERVED_NAMES:  # notification targets and routes
                    from worker.notify.config import load_notify_file

                    spec = load_notify_file(f)
                    results.append({"path": str(f), "ok": True, "name": f"notifications: {len(spec.targets)} "
                                    f"target(s), {len(spec.routes)} route(s)", "version": "-"})
                    continue
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


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    cmd = [sys.executable, "-m", "console"] + (["--readonly"] if args.readonly else [])
    return subprocess.call(cmd)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from worker.devrun import run_dev

    return run_dev(args.data_dir, args.workflows or Path("workflows"), console=not args.no_console)
