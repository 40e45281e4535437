"""FakeRuntimeClient, the search part: `list_runs(filters=RunFilter(...))` and saved views.

Same semantics as worker/search/filters.py's WHERE (the contract test holds both to them): the status
`retrying` is a waiting run on `retry …`; `step` is one of the steps a run is on; `error` is literal text,
case-insensitive; `since` counts back from the fake's clock; `waiting` is a kind (`uncertain` lists every
human wait, like the SQL) or a person who may decide one of a waiting run's pending tasks (a task without
approvers may be decided by anyone); `search` is a case-insensitive regex over run id, workflow, current step,
error and what a run waits on. Views are kept in memory, checked by the runtime's own name rule.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from worker.errors import NotFound
from worker.models import HumanTask, RunStatus, RunSummary, TaskStatus
from worker.search.filters import RETRYING, WAIT_KINDS, RunFilter
from worker.search.views import SavedView, check_name


class InvalidRegularExpressionError(Exception):
    """Like asyncpg's: Postgres refused the `~*` pattern (SQLSTATE 2201B)."""

    sqlstate = "2201B"


def _waits_on(run: RunSummary, f: RunFilter, tasks: list[HumanTask]) -> bool:
    if f.waiting is None:
        return True
    if f.waiting in WAIT_KINDS:
        kind = "human" if f.waiting == "uncertain" else f.waiting
        return (run.waiting_on or "").startswith("throttled:" if kind == "throttled" else kind)
    return run.status is RunStatus.WAITING and any(
        t.run_id == run.run_id and t.status is TaskStatus.PENDING and (not t.approvers or f.waiting in t.approvers)
        for t in tasks)


def matching(runs: list[RunSummary], f: RunFilter, tasks: list[HumanTask], now: datetime) -> list[RunSummary]:
    """The runs `f` lets through (InvalidRegularExpressionError for a search that is no regex)."""
    try:
        pattern = re.compile(f.search, re.IGNORECASE) if f.search is not None else None
    except re.error as exc:
        raise InvalidRegularExpressionError(f"invalid regular expression: {exc}") from None
    after = f.started_after(now)
    out = []
    for r in runs:
        retrying = r.status is RunStatus.WAITING and (r.waiting_on or "").startswith("retry")
        if f.status == RETRYING and not retrying:
            continue
        if f.status not in (None, RETRYING) and r.status.value != f.status:
            continue
        if ((f.workflow is not None and r.workflow != f.workflow)
                or (f.step is not None and f.step not in (r.current_step or "").split(","))
                or (f.error is not None and f.error.lower() not in (r.error or "").lower())
                or (after is not None and r.created_at < after)
                or not _waits_on(r, f, tasks)):
            continue
        if pattern is not None and not any(pattern.search(v or "") for v in
                                           (r.run_id, r.workflow, r.current_step, r.error, r.waiting_on)):
            continue
        out.append(r)
    return out


class FakeSearch:
    """Mixed into FakeRuntimeClient, which supplies the state and `_check`."""

    commands: list[tuple[Any, ...]]
    clock: datetime

    def __init__(self) -> None:
        self.views: dict[str, SavedView] = {}

    def _check(self) -> None:
        raise NotImplementedError

    async def save_view(self, name: str, filters: RunFilter, *, by: str | None = None) -> SavedView:
        self._check()
        self.commands.append(("save_view", name, filters.as_dict()))
        view = self.views[check_name(name)] = SavedView(name, filters, by or "tester", self.clock)
        return view

    async def get_view(self, name: str) -> SavedView:
        self._check()
        if name not in self.views:
            known = sorted(self.views)[:20]
            raise NotFound(f"no saved view {name!r}" + (f" (saved: {', '.join(known)})" if known else
                                                        " (none saved yet: agentrt runs ... --save-view NAME)"))
        return self.views[name]

    async def list_views(self) -> list[SavedView]:
        self._check()
        return [self.views[name] for name in sorted(self.views)]
