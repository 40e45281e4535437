"""What a new run brings to its admission: its priority and its rendered concurrency key.

Every way a run is created (CLI, API, events, webhooks, schedules, child runs, replays) computes this from the
run's definition and its plaintext inputs (before they are sealed), then passes it to `insert_run_txn`, which
admits or queues the run (worker/store/concurrency.py). A key whose expression can do real work is rendered
off the event loop (`off_loop`, else a thread), within the expression engine's work budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from worker.definitions.expressions import has_heavy_expressions
from worker.definitions.flow import check_priority, render_key
from worker.definitions.model import Definition
from worker.store.concurrency import Admission

OffLoop = Callable[..., Awaitable[Any]]


async def admission_for(defn: Definition, inputs: dict[str, Any], *, priority: str | None = None,
                        inherit: bool = False, off_loop: OffLoop | None = None) -> Admission:
    """The run's admission: `priority` (checked) if given, else the workflow's `priority:`; with `inherit`
    (a child run) its parent's. Raises ConcurrencyKeyError when the key does not render to a usable key."""
    spec = defn.spec
    chosen = None if inherit else (check_priority(priority) or spec.priority)
    if spec.concurrency is None:
        return Admission(chosen)
    if has_heavy_expressions(spec.concurrency.key):
        key = await (off_loop(render_key, spec, inputs) if off_loop is not None
                     else asyncio.to_thread(render_key, spec, inputs))
    else:
        key = render_key(spec, inputs)
    return Admission(chosen, key, spec.concurrency.limit, spec.concurrency.on_full)
