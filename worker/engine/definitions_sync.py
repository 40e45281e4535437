"""Keeps Postgres in step with the workflow files: initial scan, then hot reload with watchfiles."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from worker.bus.publisher import Publisher
from worker.definitions.loader import load_file
from worker.definitions.model import Definition
from worker.definitions.registry import (
    RESERVED_NAMES,
    Registry,
    RegistryChange,
    is_workflow_file,
    load_operator_file,
    scan_directory,
)
from worker.definitions.trust import TrustCheck
from worker.definitions.watcher import watch_directory
from worker.errors import DefinitionError
from worker.store.definitions import (
    DefinitionCache,
    clear_tools_error,
    record_deleted,
    record_invalid,
    record_loaded,
)

logger = logging.getLogger(__name__)

RESCAN_INTERVAL = 2.0
"""Seconds between two checks of the files' (mtime, size), for changes the watcher did not report."""


class DefinitionsSync:
    def __init__(self, pool: asyncpg.Pool, root: Path, publisher: Publisher | None,
                 cache: DefinitionCache | None = None, checks: Sequence[TrustCheck] = ()) -> None:
        self.pool = pool
        self.checks = tuple(checks)  # what the operator allows workflow files to reach (worker.boundary)
        self.root = root
        self.publisher = publisher
        self.cache = cache
        self.registry = Registry()
        self._pending: set[Path] = set()  # changes not yet recorded (Postgres was unavailable): retried
        self._reloading = asyncio.Lock()  # the watcher, the retry loop and the rescan reload one file at a time
        self._stamps: dict[Path, tuple[int, int]] = {}
        """(mtime, size) of each file as last read: the rescan reloads a file whose stamp moved."""

    async def initial_scan(self) -> list[RegistryChange]:
        if not await asyncio.to_thread(self.root.is_dir):
            logger.warning("workflows directory %s does not exist; no workflows loaded", self.root)
            return []
        changes = []
        self._stamps = await asyncio.to_thread(_stamps, self.root)  # before reading: a later save moves it
        # parsing is CPU work (up to seconds for a hostile 1 MiB file): keep it off the event loop
        scanned = await asyncio.to_thread(scan_directory, self.root, self.checks)
        for path, result in sorted(scanned.items()):
            try:
                changes.append(await self._apply(path, result))
            except Exception as exc:  # noqa: BLE001 - one file must not keep the worker from starting
                logger.warning("could not record workflow file %s (%s: %s); will retry", path,
                               type(exc).__name__, exc)
                self._pending.add(path)
        for name in sorted(RESERVED_NAMES):  # a tools file fixed while no worker watched: drop its old error
            path = self.root / name
            if path not in scanned:
                try:
                    await clear_tools_error(self.pool, str(path))
                except Exception as exc:  # noqa: BLE001 - cosmetic; the next save or start clears it
                    logger.warning("could not clear the recorded error of %s (%s: %s)", path, type(exc).__name__, exc)
        return changes

    async def reload(self, path: Path) -> RegistryChange:
        """Load one file again. A file still being written (truncated, then filled: some editors save in
        place) may be read half-way; when it changed while we read it, read it again."""
        for _ in range(5):
            before = await asyncio.to_thread(_stamp, path)
            change = await self._reload_once(path)
            if await asyncio.to_thread(_stamp, path) == before:
                break
        if before is None:
            self._stamps.pop(path, None)
        else:
            self._stamps[path] = before
        return change

    async def _reload_once(self, path: Path) -> RegistryChange:
        if path.name in RESERVED_NAMES:
            return await self._reload_tools(path)
        if not await asyncio.to_thread(path.exists):
            change = self.registry.remove(path)
            await record_deleted(self.pool, str(path))
            self._announce(change)
            return change
        try:
            result: Definition | DefinitionError = await asyncio.to_thread(load_file, path, self.root, self.checks)
        except DefinitionError as exc:
            result = exc
        return await self._apply(path, result)

    async def _reload_tools(self, path: Path) -> RegistryChange:
        """The shared tools and limits files: steps read them themselves when they change (steps/tool.py,
        worker/limits); here their validation status is kept up to date, so an invalid save is reported
        (file:line) like a workflow's and a fix clears the report. A saved limits file changes which limit
        names workflow files may use: every workflow file is checked again."""
        if path.name.startswith("limits."):
            for workflow in sorted(p for p in self.registry.paths() if p.name not in RESERVED_NAMES):
                await self.reload(workflow)
        if await asyncio.to_thread(path.is_file):
            try:
                await asyncio.to_thread(load_operator_file, path)
            except DefinitionError as exc:
                return await self._apply(path, exc)
        self.registry.remove(path)
        change = RegistryChange(path, "loaded", None, None)
        if await clear_tools_error(self.pool, str(path)):
            logger.info("%s is valid again", path.name)
            self._announce(change)
        return change

    async def _apply(self, path: Path, result: Definition | DefinitionError) -> RegistryChange:
        change = self.registry.apply(path, result)
        if change.kind == "invalid" and change.error is not None:
            logger.warning("workflow file invalid, previous version stays active: %s", change.error)
            await record_invalid(self.pool, str(path), change.error)
        elif isinstance(result, Definition):
            if self.cache is not None:
                self.cache.put(result)
            source = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
            await record_loaded(self.pool, str(path), result, source, change.kind)
            if change.kind == "loaded":
                logger.info("workflow %s loaded from %s (version %s)", result.name, path.name, result.def_hash[:12])
        self._announce(change)
        return change

    def _announce(self, change: RegistryChange) -> None:
        if self.publisher is None or change.kind == "unchanged":
            return
        self.publisher.event("workflow", f"workflow.{change.kind}", None, {
            "path": str(change.path), "name": change.name, "def_hash": change.def_hash,
            "error": str(change.error) if change.error else None,
        })

    async def watch_loop(self) -> None:
        retry = asyncio.create_task(self._retry_loop(), name="definitions-retry")
        rescan = asyncio.create_task(self._rescan_loop(), name="definitions-rescan")
        try:
            async for changes in watch_directory(self.root):
                for _kind, path in sorted(changes, key=lambda c: str(c[1])):
                    await self._reload_or_defer(path)
        finally:
            retry.cancel()
            rescan.cancel()

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(RESCAN_INTERVAL)
            await self.rescan()

    async def rescan(self) -> set[Path]:
        """Reload the files whose (mtime, size) moved since they were read (added and deleted ones too);
        return them. Runs every RESCAN_INTERVAL beside the watcher.

        The watcher cannot see what happened before it started (a file saved while the worker was
        starting, between the initial scan and the watch), and on some mounts (network file systems,
        Docker Desktop bind mounts) it sees nothing at all; a stat of each file catches both.
        """
        try:
            now = await asyncio.to_thread(_stamps, self.root)
        except OSError:
            return set()  # the directory is gone or unreadable: the watcher reports what it can
        settled = time.time_ns() - int(RESCAN_INTERVAL / 2 * 1e9)  # newer saves are the watcher's, if it works
        moved = {path for path in set(now) | set(self._stamps)
                 if now.get(path) != self._stamps.get(path) and path not in self._pending
                 and (path not in now or now[path][0] <= settled)}
        for path in sorted(moved):
            logger.info("%s changed without a file event; reloading it", path.name)
            await self._reload_or_defer(path)
        return moved

    async def _reload_or_defer(self, path: Path) -> None:
        """Reload one file; if that cannot be recorded now (Postgres down...), retry it later."""
        try:
            async with self._reloading:
                await self.reload(path)
        except Exception as exc:  # noqa: BLE001 - the other files and later saves must still go through
            if path not in self._pending:
                logger.warning("could not record the change to %s (%s: %s); retrying every second", path,
                               type(exc).__name__, exc)
            self._pending.add(path)
        else:
            self._pending.discard(path)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for path in sorted(self._pending):
                await self._reload_or_defer(path)


def _stamps(root: Path) -> dict[Path, tuple[int, int]]:
    """The stamp of every workflow file (and the tools file) directly inside `root`."""
    stamps = {}
    for path in root.iterdir():
        if is_workflow_file(path) or path.name in RESERVED_NAMES:
            stamp = _stamp(path)
            if stamp is not None and path.is_file():
                stamps[path] = stamp
    return stamps


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, or None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
