"""The edges of a RunActor's commit: sealing what is stored (encrypted payloads) before it, telling Redis after.

- `seal_for_storage`: copies of the events (and the run's output, the children's inputs) with their payloads
  sealed by Vault transit; the state in memory (and telemetry, which keeps sizes) stays plain.
- `publish_commit`: after the commit, one live event for the console and the API, work for new child runs, the
  run's end for `wait_for_run`, the parent's wake-up.
- `stop_flights`: cancel the attempts in flight (cancel, fail, pause --now) and say which finished anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from worker import runlog as ev
from worker.bus.publisher import Publisher
from worker.engine.attempt import Outcome
from worker.engine.state import InstanceKey
from worker.secrets.transit import PayloadCipher, seal_fields
from worker.store.writer import NewChild, RunUpdate


async def seal_for_storage(cipher: PayloadCipher | None, events: list[ev.Event], update: RunUpdate,
                           children: list[NewChild]) -> list[ev.Event]:
    """Sealed copies of `events`; `update.output` and each child's inputs are sealed in place."""
    stored = [dataclasses.replace(e, data=dict(e.data)) for e in events]
    out_holder = {"output": update.output}
    for child in children:
        child.created = dataclasses.replace(child.created, data=dict(child.created.data))
    await seal_fields(cipher, [*(e.data for e in stored), out_holder, *(c.created.data for c in children)])
    update.output = out_holder["output"]
    for child in children:
        child.inputs = child.created.data["inputs"]
    return stored


def publish_commit(pub: Publisher, run_id: str, events: list[ev.Event], update: RunUpdate,
                   children: list[NewChild], *, finished: bool, signal_parent: str | None) -> None:
    if events:
        # one live event per commit: its type is the last event's; `events` lists them all
        last = events[-1]
        data: dict[str, Any] = {
            "status": update.status, "step": last.step_id, "item": last.item, "attempt": last.attempt,
            "seq": last.seq, "ts": last.ts, "current_step": update.current_step, "waiting_on": update.waiting_on,
            "events": [[e.seq, e.type, e.step_id, e.item, e.attempt] for e in events],
            "committed_at": time.time(),
        }
        pub.event("step" if last.step_id else "run", last.type, run_id, data)
    for child in children:
        pub.enqueue(child.run_id)
    if finished:
        pub.finished(run_id)
    if signal_parent:
        pub.enqueue(signal_parent)
        pub.signal(signal_parent)


async def stop_flights(running: dict[InstanceKey, asyncio.Task[Outcome]]) -> dict[InstanceKey, Outcome | None]:
    """Cancel every attempt in flight and wait for them: each one's outcome if it finished first, else None."""
    for task in running.values():
        task.cancel()
    if running:
        await asyncio.gather(*running.values(), return_exceptions=True)
    return {key: task.result() if not task.cancelled() and task.exception() is None else None
            for key, task in running.items()}
