"""`RunFilter`: what `list_runs` narrows runs by, each part optional, all parts combined with AND."""

from __future__ import annotations

import re
import uuid
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
    """Waits on this kind (WAIT_KINDS), or on this person / `group:NAME` (may decide one of its pending tasks): an
    unfinished run."""
    search: str | None = None
    """A case-insensitive POSIX regex over run id, workflow, current step, error, what it waits on. `search`,
    `step` and `error` look at the newest SCAN_LIMIT runs matching the other parts."""

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


SCAN_LIMIT = 10_000
"""Runs the unindexed parts of a filter (`search`, `step`, `error`) and the `longest` order look at: the newest
SCAN_LIMIT runs that match the indexed parts (status, workflow, since, waiting, the page), the oldest ones when
listed oldest first. They have no index (pg_trgm is not in every Postgres, the embedded one included), so a
bound keeps a search over 10M runs as fast as over 10k (a search that is a run id prefix also looks at the
runs whose id starts with it, through the primary key: `id_range`): narrow by status, workflow or `since` to reach older
runs (bench/scale.py measures it)."""
LIVE_STATUSES = "status IN ('queued', 'pending', 'running', 'waiting', 'paused')"
"""The unfinished runs: a run waits on something only while it lives (a few thousand rows of runs_status_created_idx
out of millions, however old the wait)."""
_KNOWN_STATUSES = ("queued", "pending", "running", "waiting", "paused", "completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Conditions:
    """A filter as SQL over `runs`: fixed fragments (never text from input) with $n placeholders for `args`."""

    indexed: list[str]
    """Served by an index: status, workflow, created_at, the live runs."""
    scanned: list[str]
    """Checked row by row: bounded by SCAN_LIMIT (`list_runs`)."""
    args: list[Any]

    def sql(self, parts: list[str]) -> str:
        return " AND ".join(parts) or "true"


def conditions(f: RunFilter, before: datetime | None, first: int = 1) -> Conditions:
    """`f` (and the page: created before `before`) as SQL conditions, placeholders numbered from `$first`.

    Only the parts given appear, each a fixed fragment, and a known status or waiting kind is written as a literal:
    each shape of filter is its own prepared statement, so Postgres plans it with the right index (its cached
    generic plan included) and can prove partial-index predicates (runs_failed_workflow_idx, migration 0015)."""
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${first + len(args) - 1}"

    indexed: list[str] = []
    scanned: list[str] = []
    if f.status == RETRYING:
        indexed.append("status = 'waiting' AND waiting_on LIKE 'retry%'")
    elif f.status in _KNOWN_STATUSES:
        indexed.append(f"status = '{f.status}'")
    elif f.status is not None:
        indexed.append(f"status = {arg(f.status)}")
    if f.workflow is not None:
        indexed.append(f"workflow = {arg(f.workflow)}")
    if before is not None:
        indexed.append(f"created_at < {arg(before)}")
    if f.since is not None:
        indexed.append(f"created_at >= {arg(f.started_after())}")
    if f.waiting is not None:
        if f.waiting in WAIT_KINDS:
            kind = "human" if f.waiting == "uncertain" else f.waiting
            indexed.append(f"{LIVE_STATUSES} AND waiting_on LIKE '{'throttled:' if kind == 'throttled' else kind}%'")
        else:
            indexed.append(f"""status = 'waiting' AND EXISTS (
                SELECT 1 FROM human_tasks t WHERE t.run_id = runs.run_id AND t.status = 'pending'
                  AND (t.approvers = '{{}}' OR {arg(f.waiting)} = ANY(t.approvers)))""")
    if f.search is not None:
        p = arg(f.search)
        scanned.append(f"(run_id::text ~* {p} OR workflow ~* {p} OR current_step ~* {p} OR error ~* {p}"
                       f" OR waiting_on ~* {p})")
    if f.step is not None:
        scanned.append(f"{arg(f.step)} = ANY(string_to_array(current_step, ','))")
    if f.error is not None:
        scanned.append(f"strpos(lower(error), lower({arg(f.error)})) > 0")
    return Conditions(indexed, scanned, args)


_ID_PREFIX = re.compile(r"[0-9a-fA-F-]{4,36}")


def id_range(search: str | None) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The run ids a search that looks like a run id prefix (4+ hex digits) could start: (lowest, highest)."""
    if search is None or not _ID_PREFIX.fullmatch(search):
        return None
    digits = search.replace("-", "").lower()
    if not 4 <= len(digits) <= 32:
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
