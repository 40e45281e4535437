"""Helpers for the concurrency-key and priority tests: workflows, and what the event log says about overlap."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from worker.client import RuntimeClient

END_EVENTS = ("run.completed", "run.failed", "run.cancelled")


def keyed_workflow(name: str = "keyed", *, limit: int = 1, on_full: str = "queue", seconds: float = 0.05,
                   steps: int = 1, priority: str | None = None) -> str:
    """A workflow whose runs sleep `seconds` per step, with `concurrency: {key: inputs.customer, limit}`."""
    body = "\n".join(
        f"  - {{id: s{i}, uses: python, with: {{function: \"tests.support.wf_funcs:sleep_for\", "
        f"args: {{seconds: {seconds}}}}}}}" for i in range(1, steps + 1))
    prio = f"priority: {priority}\n" if priority else ""
    return (f"name: {name}\ninputs: {{customer: {{type: string}}}}\n{prio}"
            f"concurrency: {{key: \"cust-${{{{ inputs.customer }}}}\", limit: {limit}, on_full: {on_full}}}\n"
            f"steps:\n{body}\n")


async def run_intervals(client: RuntimeClient, run_ids: list[str]) -> dict[str, list[tuple[float, float, str]]]:
    """Per concurrency key: (first step start, run end, run id) of each run, from the event log (Postgres)."""
    rows = await client.pool.fetch(
        """SELECT r.run_id::text, r.concurrency_key,
                  (SELECT min(extract(epoch FROM e.ts)) FROM events e
                    WHERE e.run_id = r.run_id AND e.type = 'step.started') AS started,
                  (SELECT max(extract(epoch FROM e.ts)) FROM events e
                    WHERE e.run_id = r.run_id AND e.type = ANY($2::text[])) AS ended
             FROM runs r WHERE r.run_id = ANY($1::uuid[])""", run_ids, list(END_EVENTS))
    by_key: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for r in rows:
        if r["started"] is not None:
            by_key[r["concurrency_key"]].append((float(r["started"]), float(r["ended"] or 1e18), r["run_id"]))
    return {k: sorted(v) for k, v in by_key.items()}


def overlaps(intervals: dict[str, list[tuple[float, float, str]]], limit: int = 1) -> list[Any]:
    """Moments where more than `limit` runs of one key were between their first step and their end."""
    found = []
    for key, spans in intervals.items():
        points = sorted([(s, 1, r) for s, _, r in spans] + [(e, -1, r) for _, e, r in spans],
                        key=lambda p: (p[0], p[1]))  # an end at the same instant as a start comes first
        active = 0
        for ts, delta, run_id in points:
            active += delta
            if active > limit:
                found.append((key, ts, run_id, active))
    return found


async def start_order(client: RuntimeClient, run_ids: list[str]) -> list[str]:
    """The runs in the order their first step started."""
    rows = await client.pool.fetch(
        """SELECT e.run_id::text, min(e.ts) AS started FROM events e
            WHERE e.run_id = ANY($1::uuid[]) AND e.type = 'step.started' GROUP BY e.run_id ORDER BY started""",
        run_ids)
    return [r["run_id"] for r in rows]
