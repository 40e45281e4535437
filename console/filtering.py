"""Pure helpers for the runs filter (`/`) and the status cycle (`s`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.models import RunStatus, RunSummary

# The order the `s` key cycles through; None means "every status".
STATUS_CYCLE: tuple[RunStatus | None, ...] = (
    None,
    RunStatus.RUNNING,
    RunStatus.WAITING,
    RunStatus.PENDING,
    RunStatus.QUEUED,
    RunStatus.FAILED,
    RunStatus.COMPLETED,
    RunStatus.CANCELLED,
)


def next_status(current: RunStatus | None, step: int = 1) -> RunStatus | None:
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
