"""The runs filter's language (`/` and `:` on the runs screen), pure: no Textual, no I/O.

Free text is a regex over run id, workflow, step, error and what a run waits on, as it always was. Besides it,
`key:value` terms combine with AND, like the flags of `agentrt runs`, into a `worker.search.filters.RunFilter`
(whose checks apply: a bad duration is refused there):

    workflow:refund-request status:failed error:timeout since:2h
    waiting:human        waiting:alice        error:"HTTP 503"        step:approve  fan-out

A value with spaces is quoted ("..." or '...'). A word that only looks like a term is searched for as text when
its colon is escaped (`http\\:`). A line starting with `:` is a command, run on enter: `:view NAME` applies a saved
view, `:view` lists them, `:save NAME` saves the current filter as one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Literal

from worker.errors import WorkerError
from worker.models import RunStatus, RunSummary
from worker.search.filters import RETRYING, WAIT_KINDS, RunFilter

TERMS = ("workflow", "status", "step", "error", "since", "waiting")
"""The keys of `key:value` terms, in the order they are written back (a view as text)."""
ALIASES = {"waiting-on": "waiting", "waiting_on": "waiting"}
"""Other spellings of a key (the CLI's flag is `--waiting-on`)."""
EXAMPLES = {"workflow": "workflow:refund-request", "status": "status:failed", "step": "step:approve",
            "error": "error:timeout", "since": "since:2h", "waiting": "waiting:human"}
STATUSES = (*(s.value for s in RunStatus), RETRYING)
KNOWN = " ".join(f"{key}:" for key in TERMS)

_TERM = re.compile(r"""(?:^|(?<=\s))(?P<key>[A-Za-z][A-Za-z_-]*):(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>\S*))""")


class QueryError(ValueError):
    """The filter or command cannot be used; the message says why and what would do."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A parsed filter line: its terms (a RunFilter without `search`) and its free text (the regex)."""

    terms: RunFilter
    text: str

    @property
    def has_terms(self) -> bool:
        return bool(self.terms.as_dict())

    def filters(self, status: str | None = None) -> RunFilter:
        """The whole filter: the terms, `status` (the tab) unless a term names one, and the text as `search`."""
        return replace(self.terms, status=self.terms.status or status, search=self.text or None)


EMPTY = RunQuery(RunFilter(), "")


def parse_query(line: str) -> RunQuery:
    """`line` as terms and free text. QueryError for an unknown key, a term without a value, a key given twice
    with two values, a status that is none, or what RunFilter refuses (a bad duration, too long a value)."""
    line = line.strip()
    values: dict[str, str] = {}
    rest: list[str] = []
    pos = 0
    for m in _TERM.finditer(line):
        given = m["key"].lower()
        key = ALIASES.get(given, given)
        if key not in TERMS:
            raise QueryError(f"unknown filter {m['key']}: (known: {KNOWN}); to search for the text, "
                             f"write {m['key']}\\:")
        value = next((v for v in (m["dq"], m["sq"], m["bare"]) if v is not None), "").strip()
        if m["bare"] is not None and value[:1] in ("'", '"'):
            raise QueryError(f"{given}: the quote {value[0]} is not closed")
        if not value:
            raise QueryError(f"{given}: needs a value, e.g. {EXAMPLES[key]}")
        if key == "status":
            value = value.lower()
            if value not in STATUSES:
                raise QueryError(f"status: {value!r} is not a status (one of {', '.join(STATUSES)})")
        if values.get(key, value) != value:
            raise QueryError(f"{key}: given twice ({values[key]!r} and {value!r})")
        values[key] = value
        rest.append(line[pos:m.start()].strip())
        pos = m.end()
    if not values:
        return RunQuery(RunFilter(), line)  # plain text, exactly as typed
    rest.append(line[pos:].strip())
    try:
        terms = RunFilter(**values)
    except WorkerError as exc:
        raise QueryError(str(exc).removeprefix("filter ")) from None
    return RunQuery(terms, " ".join(part for part in rest if part))


def _quoted(value: str) -> str:
    """`value` as a term's value: bare when it reads back so, else quoted (a value with spaces and both kinds of
    quote cannot be written: the line then differs from the filter)."""
    if value and value[0] not in "\"'" and not any(c.isspace() for c in value):
        return value
    return f"'{value}'" if '"' in value else f'"{value}"'


def format_query(filters: RunFilter, *, skip: tuple[str, ...] = ()) -> str:
    """`filters` as a line `parse_query` reads back (terms first, then the search text); `skip`: keys left out."""
    terms = [f"{key}:{_quoted(value)}" for key in TERMS
             if key not in skip and (value := getattr(filters, key)) is not None]
    return " ".join([*terms, *([filters.search] if filters.search else [])])


def describe(filters: RunFilter) -> str:
    """`workflow=refund status=failed` (RunFilter.describe, the search text aside: the info line shows it apart)."""
    return replace(filters, search=None).describe()


@dataclass(frozen=True, slots=True)
class Command:
    name: Literal["view", "save"]
    arg: str | None


COMMANDS_HELP = ":view NAME applies a saved view · :view lists them · :save NAME saves this filter · esc cancels"


def is_command(line: str) -> bool:
    return line.lstrip().startswith(":")


def parse_command(line: str) -> Command:
    """`:view`, `:view NAME` or `:save NAME`; QueryError for anything else."""
    words = line.strip().removeprefix(":").split()
    name, args = (words[0].lower(), words[1:]) if words else ("", [])
    if name not in ("view", "save"):
        shown = f":{words[0]}" if words else ":"
        raise QueryError(f"unknown command {shown} ({COMMANDS_HELP.removesuffix(' · esc cancels')}; "
                         "ctrl+p opens the command palette)")
    if len(args) > 1:
        raise QueryError(f":{name} takes one view name, not {len(args)} words")
    if name == "save" and not args:
        raise QueryError(":save NAME: name the view (lowercase letters, digits, '.', '_' or '-')")
    return Command("view" if name == "view" else "save", args[0] if args else None)


def same_filter(a: RunFilter, b: RunFilter) -> bool:
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(RunFilter))


def preview_match(f: RunFilter, run: RunSummary, now: datetime) -> bool:
    """Whether `run` meets `f`'s terms (not its search: TextFilter previews that), as far as a run's row tells:
    a local preview until the server answers (waiting on a person needs the tasks: every waiting run passes)."""
    waiting_on = run.waiting_on or ""
    if f.status == RETRYING:
        if not (run.status is RunStatus.WAITING and waiting_on.startswith("retry")):
            return False
    elif f.status is not None and run.status.value != f.status:
        return False
    if f.workflow is not None and run.workflow != f.workflow:
        return False
    if f.step is not None and f.step not in (run.current_step or "").split(","):
        return False
    if f.error is not None and f.error.lower() not in (run.error or "").lower():
        return False
    after = f.started_after(now)
    if after is not None and run.created_at < after:
        return False
    if f.waiting is None:
        return True
    if f.waiting in WAIT_KINDS:
        kind = {"uncertain": "human", "throttled": "throttled:"}.get(f.waiting, f.waiting)
        return waiting_on.startswith(kind)
    return run.status is RunStatus.WAITING
