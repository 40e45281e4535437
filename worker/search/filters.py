"""`RunFilter`: what `list_runs` narrows runs by, each part optional, all parts combined with AND."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.definitions.schema import parse_duration
from worker.errors import WorkerError

RETRYING = "retrying"
"""A status filter besides the RunStatus values: runs backing off between attempts of a step."""
WAIT_KINDS = ("human", "event", "retry", "sleep", "child", "throttled", "uncertain")
"""`waiting` values that name what a run waits for; anything else names a person or `group:NAME` who may
decide one of its pending human tasks."""
MAX_TEXT = 500


@dataclass(frozen=True, slots=True)
class RunFilter:
    workflow: str | None = None
    status: str | None = None
    """A RunStatus value, or `retrying`."""
    step: str | None = None
    """One of the steps it is on (current_step) is exactly this."""
    error: str | None = None
    """Its error contains this text (case-insensitive, literal)."""
    since: str | None = None
    """Started within this long (`30m`, `4h`, `2d`)."""
    waiting: str | None = None
    """Waits on this kind (WAIT_KINDS), or on this person / `group:NAME` (may decide one of its pending tasks)."""
    search: str | None = None
    """A case-insensitive POSIX regex over run id, workflow, current step, error, what it waits on."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise WorkerError(f"filter {f.name}: at most {MAX_TEXT} characters of text")
        if self.since is not None:
            try:
                parse_duration(self.since)
            except ValueError as exc:
                raise WorkerError(f"filter since: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunFilter:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WorkerError(f"unknown filter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{k: v for k, v in data.items() if v is not None})

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def merged(self, other: RunFilter) -> RunFilter:
        """This filter with `other`'s parts on top (a saved view narrowed by flags)."""
        return RunFilter.from_dict({**self.as_dict(), **other.as_dict()})

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items()) or "(all runs)"

    def started_after(self, now: datetime | None = None) -> datetime | None:
        if self.since is None:
            return None
        return (now or datetime.now(tz=UTC)) - timedelta(seconds=parse_duration(self.since))


WHERE = """
    ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
    AND (NOT $6 OR waiting_on LIKE 'retry%')
    AND ($4::timestamptz IS NULL OR created_at < $4)
    AND ($5::text IS NULL OR run_id::text ~* $5 OR workflow ~* $5 OR current_step ~* $5 OR error ~* $5
         OR waiting_on ~* $5)
    AND ($7::text IS NULL OR $7 = ANY(string_to_array(current_step, ',')))
    AND ($8::text IS NULL OR strpos(lower(error), lower($8)) > 0)
    AND ($9::timestamptz IS NULL OR created_at >= $9)
    AND (($10::text IS NULL AND $11::text IS NULL) OR waiting_on LIKE $10 || '%'
         OR ($11::text IS NOT NULL AND status = 'waiting' AND EXISTS (
             SELECT 1 FROM human_tasks t WHERE t.run_id = runs.run_id AND t.status = 'pending'
               AND (t.approvers = '{}' OR $11 = ANY(t.approvers)))))
"""
"""The WHERE clause of a filtered run listing; `params` gives $1..$2 and $4..$11 ($3 is the LIMIT)."""


def params(f: RunFilter, before: datetime | None) -> dict[int, Any]:
    """The parameters of WHERE for `f` (by number)."""
    retrying = f.status == RETRYING
    kind = person = None
    if f.waiting is not None:
        if f.waiting in WAIT_KINDS:
            kind = "human" if f.waiting == "uncertain" else f.waiting
            kind = "throttled:" if kind == "throttled" else kind
        else:
            person = f.waiting
    return {1: "waiting" if retrying else f.status, 2: f.workflow, 4: before, 5: f.search, 6: retrying, 7: f.step,
            8: f.error, 9: f.started_after(), 10: kind, 11: person}
