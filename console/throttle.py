"""Coalesce reload requests: one job at a time; requests during a run cause exactly one more run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from textual.dom import DOMNode


class Coalescer:
    """`request()` as often as events arrive; `job` runs at most once per `pause` seconds.

    The job runs in a Textual worker of `node` (never on the UI path), and must handle its own
    errors. Unlike an exclusive worker that restarts on every request, a steady flood of requests
    cannot starve it.
    """

    def __init__(self, node: DOMNode, job: Callable[[], Awaitable[None]], *, group: str, pause: float) -> None:
        self._node = node
        self._job = job
        self._group = group
        self._pause = pause
        self._running = False
        self._again = False

    @property
    def running(self) -> bool:
        return self._running

    def request(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        self._node.run_worker(self._loop(), group=self._group, exit_on_error=False)

    async def _loop(self) -> None:
        try:
            while True:
                self._again = False
                await self._job()
                if not self._again:
                    return
                await asyncio.sleep(self._pause)
        finally:
            self._running = False
