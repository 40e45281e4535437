"""Keeps Postgres in step with the workflow files: initial scan, then hot reload with watchfiles."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg

from worker.bus.publisher import Publisher
from worker.definitions.loader import load_file
from worker.definitions.model import Definition
from worker.definitions.registry import Registry, RegistryChange, scan_directory
from worker.definitions.watcher import watch_directory
from worker.errors import DefinitionError
from worker.store.definitions import DefinitionCache, record_deleted, record_invalid, record_loaded

logger = logging.getLogger(__name__)


class DefinitionsSync:
    def __init__(self, pool: asyncpg.Pool, root: Path, publisher: Publisher | None,
                 cache: DefinitionCache | None = None) -> None:
        self.pool = pool
        self.root = root
        self.publisher = publisher
        self.cache = cache
        self.registry = Registry()

    async def initial_scan(self) -> list[RegistryChange]:
        if not await asyncio.to_thread(self.root.is_dir):
            logger.warning("workflows directory %s does not exist; no workflows loaded", self.root)
            return []
        changes = []
        # parsing is CPU work (up to seconds for a hostile 1 MiB file): keep it off the event loop
        scanned = await asyncio.to_thread(scan_directory, self.root)
        for path, result in sorted(scanned.items()):
            changes.append(await self._apply(path, result))
        return changes

    async def reload(self, path: Path) -> RegistryChange:
        if not await asyncio.to_thread(path.exists):
            change = self.registry.remove(path)
            await record_deleted(self.pool, str(path))
            self._announce(change)
            return change
        try:
            result: Definition | DefinitionError = await asyncio.to_thread(load_file, path, self.root)
        except DefinitionError as exc:
            result = exc
        return await self._apply(path, result)

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
        async for changes in watch_directory(self.root):
            for _kind, path in sorted(changes, key=lambda c: str(c[1])):
                await self.reload(path)
