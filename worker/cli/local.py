"""The commands that run something here: worker, migrate, validate, console, dev."""

from __future__ import annotations

import argparse
import asyncio
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
