"""Pure helpers for the runs filter (`/`) and the status cycle (`s`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from worker.models import RunStatus, RunSummary

RETRYING: Literal["retrying"] = "retrying"
"""The runs backing off between attempts of a step (a part of the waiting ones): `list_runs(status="retrying")`."""
StatusTab = RunStatus | Literal["retrying"] | None
"""A runs tab: a status, the retrying runs, or None for every run."""

# The order the `s` key cycles through; None means "every status".
STATUS_CYCLE: tuple[StatusTab, ...] = (
    None,
    RunStatus.RUNNING,
    RETRYING,
    RunStatus.WAITING,
    RunStatus.PAUSED,
    RunStatus.PENDING,
    RunStatus.QUEUED,
    RunStatus.FAILED,
    RunStatus.COMPLETED,
    RunStatus.CANCELLED,
)
HIDDEN_WHEN_EMPTY = frozenset({RunStatus.QUEUED, RunStatus.PAUSED})
"""Tabs shown only while some run has the status (or the tab is chosen): only workflows with concurrency keys
queue runs, and only people pause them."""


def parse_tab(name: str) -> StatusTab:
    """A tab's name (`all`, `retrying`, a status) as a StatusTab."""
    if name == "all":
        return None
    return RETRYING if name == RETRYING else RunStatus(name)


def is_retrying(run: RunSummary) -> bool:
    """Backing off between attempts of a step: waiting, on `retry N/M`."""
    return run.status is RunStatus.WAITING and (run.waiting_on or "").startswith("retry")


def next_status(current: StatusTab, step: int = 1) -> StatusTab:
    index = STATUS_CYCLE.index(current) if current in STATUS_CYCLE else 0
    return STATUS_CYCLE[(index + step) % len(STATUS_CYCLE)]


@dataclass(frozen=True, slots=True)
class TextFilter:
    """A case-insensitive regex over a run's workflow, status, id and current step.

    Text that is not a valid regex is matched literally, so typing `fan-out(` never errors.
    """

    text: str
    is_regex: bool
    match: Callable[[str], bool]

    @classmethod
    def parse(cls, text: str) -> TextFilter:
        text = text.strip()
        if not text:
            return cls("", False, lambda _s: True)
        try:
            pattern = re.compile(text, re.IGNORECASE)
            is_regex = True
        except re.error:
            pattern = re.compile(re.escape(text), re.IGNORECASE)
            is_regex = False
        return cls(text, is_regex, lambda s: pattern.search(s) is not None)

    @classmethod
    def literal(cls, text: str) -> TextFilter:
        """Match `text` as plain text (the fallback when Postgres refuses it as a regex)."""
        text = text.strip()
        pattern = re.compile(re.escape(text), re.IGNORECASE)
        return cls(text, False, lambda s: pattern.search(s) is not None)

    @property
    def active(self) -> bool:
        return bool(self.text)

    def accepts(self, run: RunSummary) -> bool:
        if not self.text:
            return True
        fields = (run.workflow, run.status.value, run.run_id, run.current_step or "", run.waiting_on or "")
        return any(self.match(f) for f in fields)


INVALID_REGEX_SQLSTATE = "2201B"


def is_invalid_regex(exc: BaseException) -> bool:
    """Postgres refused the search pattern (asyncpg's InvalidRegularExpressionError, by SQLSTATE)."""
    return getattr(exc, "sqlstate", None) == INVALID_REGEX_SQLSTATE


def filter_runs(runs: Sequence[RunSummary], text_filter: TextFilter) -> list[RunSummary]:
    return [r for r in runs if text_filter.accepts(r)]


def cancellable(runs: Sequence[RunSummary]) -> list[RunSummary]:
    return [r for r in runs if not r.status.terminal]
