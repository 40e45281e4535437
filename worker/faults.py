"""Fault injection for crash tests: off unless AGENTRT_FAULT_POINT is set (never set it in production).

`AGENTRT_FAULT_POINT=<point>` makes the worker kill itself (like kill -9: no cleanup, no flush) the
`AGENTRT_FAULT_AFTER`-th time (default 1) it reaches that point. Before dying it writes the point
name to `AGENTRT_FAULT_MARKER` (a file), so a test can prove that its fault really fired.

Points: `after-call-before-commit` (an executor returned; its result is not committed),
`after-commit-before-ack` (runs leased; the stream entries not acknowledged), `during-reclaim`
(entries of a dead consumer claimed, not yet handled), `after-decision-before-commit` (a human
decision was read; the run has not recorded it), `schedule-before-insert` (a schedule's due tick was
claimed and its tick row written in the open transaction; its run is not inserted, nothing committed).
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"after-call-before-commit", "after-commit-before-ack", "during-reclaim",
                    "after-decision-before-commit", "schedule-before-insert"})

_POINT = os.environ.get("AGENTRT_FAULT_POINT") or None
_AFTER = int(os.environ.get("AGENTRT_FAULT_AFTER", "1") or "1")
_seen = 0

if _POINT is not None and _POINT not in POINTS:
    raise SystemExit(f"AGENTRT_FAULT_POINT={_POINT!r} is not one of {', '.join(sorted(POINTS))}")


def reached(point: str) -> None:
    """Called at each fault point; a no-op unless this point is armed."""
    global _seen
    if point != _POINT:
        return
    _seen += 1
    if _seen < _AFTER:
        return
    marker = os.environ.get("AGENTRT_FAULT_MARKER")
    if marker:
        with open(marker, "a", encoding="utf-8") as f:
            f.write(point + "\n")
            f.flush()
            os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
