"""Flow control of a workflow: its `concurrency:` key and its `priority:`.

`concurrency: {key, limit, on_full}` caps the runs of the workflow that are active at once per value of
`key`. The key is a template that may read only `inputs` (it is rendered when a run is created, before any
step ran), by the same bounded expression engine as everything else; `render_key` turns it into the text
Postgres counts runs by (worker/store/concurrency.py). The checks here run when the file loads, so a key
that could never render is an error at file:line:column, not a refused run later.
"""

from __future__ import annotations

from typing import Any

from worker.definitions.expressions import OPEN, check_template, render, root_reads
from worker.definitions.problems import Problem
from worker.definitions.schema import WorkflowSpec
from worker.errors import ExpressionError, InvalidRequest, WorkerError

PRIORITIES: tuple[str, ...] = ("high", "normal", "low")
"""Run priorities, highest first (their weights are in worker/bus/streams.py)."""

MAX_KEY_LENGTH = 256
"""Characters of a rendered concurrency key."""

_LOC = ("concurrency", "key")


class ConcurrencyKeyError(WorkerError):
    """A run's concurrency key did not render to a usable key from its inputs (the run is not created)."""


def check_priority(value: str | None) -> str | None:
    """None, or one of PRIORITIES; anything else is a usage error that lists them."""
    if value is None or value in PRIORITIES:
        return value
    raise InvalidRequest(f"unknown priority {value!r}: one of {', '.join(PRIORITIES)}")


def _checked_key(value: Any) -> str:
    """A rendered key as the text runs are counted by: a string or an integer, printable, not empty, at most
    MAX_KEY_LENGTH characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise ConcurrencyKeyError(f"the concurrency key must render to a string or an integer, not {kind}")
    if not value:
        raise ConcurrencyKeyError("the concurrency key rendered to an empty string")
    if len(value) > MAX_KEY_LENGTH:
        raise ConcurrencyKeyError(f"the concurrency key rendered to {len(value):,} characters; at most "
                                  f"{MAX_KEY_LENGTH} are allowed")
    if not value.isprintable():
        raise ConcurrencyKeyError("the concurrency key must be printable text (no newlines or control characters)")
    return value


def render_key(spec: WorkflowSpec, inputs: dict[str, Any]) -> str | None:
    """The run's concurrency key (None: the workflow has none). Raises ConcurrencyKeyError."""
    if spec.concurrency is None:
        return None
    try:
        value = render(spec.concurrency.key, {"inputs": inputs})
    except ExpressionError as exc:
        raise ConcurrencyKeyError(f"cannot render the concurrency key: {exc}") from None
    return _checked_key(value)


def key_is_template(spec: WorkflowSpec) -> bool:
    return spec.concurrency is not None and OPEN in spec.concurrency.key


def concurrency_problems(spec: WorkflowSpec) -> list[Problem]:
    """The key is a valid template that reads only `inputs` (declared ones, when `inputs:` declares any);
    a key without an expression must itself be a usable key."""
    if spec.concurrency is None:
        return []
    key = spec.concurrency.key
    where = "concurrency.key"
    if OPEN not in key:
        try:
            _checked_key(key)
        except ConcurrencyKeyError as exc:
            return [Problem(_LOC, f"{where}: {exc}")]
        return []
    try:
        check_template(key)
        reads = root_reads(key)
    except ExpressionError as exc:
        return [Problem(_LOC, f"{where}: {exc}")]
    for read in reads:
        if read.root != "inputs":
            return [Problem(_LOC, f"{where}: may read only inputs, not '{read.root}' (the key is rendered when "
                                  "the run is created, before any step has run)")]
        if spec.inputs and read.key is not None and read.key not in spec.inputs:
            declared = ", ".join(sorted(spec.inputs))
            return [Problem(_LOC, f"{where}: reads {read.text} but there is no input '{read.key}' "
                                  f"(declared: {declared})")]
    return []
