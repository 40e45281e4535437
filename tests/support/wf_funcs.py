"""`uses: python` targets for engine tests (imported by in-process and subprocess workers)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


def noop() -> None:
    return None


async def anoop() -> int:
    return 1


async def sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


def always_fail(message: str = "poison") -> None:
    raise RuntimeError(message)


def touch(path: str) -> int:
    """Append a line to `path` (counts how often the step really ran) and return the count."""
    p = Path(path)
    with p.open("a") as f:
        f.write(f"{os.getpid()}\n")
    return len(p.read_text().splitlines())
