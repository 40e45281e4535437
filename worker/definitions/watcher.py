"""Watching the workflows directory for saved, added and deleted workflow files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from watchfiles import Change, awatch

from worker.definitions.registry import RESERVED_NAMES, is_workflow_file

_RUST_TIMEOUT_MS = 500
"""How long the watcher thread blocks without news; bounds how long cancellation can take."""


async def watch_directory(root: Path, *, debounce_ms: int = 50,
                          stop_event: asyncio.Event | None = None) -> AsyncIterator[set[tuple[str, Path]]]:
    """Yield batches of (kind, path) for workflow files (and the shared `tools.yaml`) directly inside `root`.

    `kind` is "added", "modified" or "deleted"; paths are `root / name`, as `scan_directory`
    returns them. An editor that saves by renaming may report a file as deleted and added in one
    batch, so treat every path as "look at this file again". Stops when `stop_event` is set
    (checked every few milliseconds).
    """
    root = Path(root)
    debounce = max(1, debounce_ms)

    def keep(_change: Change, raw_path: str) -> bool:
        path = Path(raw_path)
        return is_workflow_file(path) or path.name in RESERVED_NAMES

    async for changes in awatch(root, watch_filter=keep, debounce=debounce, step=min(debounce, 50),
                                stop_event=stop_event, rust_timeout=_RUST_TIMEOUT_MS, recursive=False):
        batch = {(change.raw_str(), root / Path(raw_path).name) for change, raw_path in changes}
        if batch:
            yield batch
