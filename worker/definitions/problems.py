"""Problems: why a workflow spec is invalid, each located by its path inside the document.

The YAML loader turns a problem's path into file:line:column; `Definition.from_json` reports it as
text. `problems_from_validation` turns pydantic's errors into problems with readable reasons.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from worker.definitions.expressions import OPEN
from worker.definitions.schema import AVAILABLE_KINDS, WorkflowSpec

CONTEXT_ROOTS: tuple[str, ...] = ("inputs", "steps", "run", "item", "index", "secrets")
"""Names an expression may start with. `item` and `index` exist only in `with:` of a foreach step."""
FOREACH_ROOTS = frozenset({"item", "index"})

Loc = tuple[str | int, ...]

_DICTIONARY = re.compile(r"a valid dictionary(?: or instance of \w+)?")


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a spec is invalid, located by its path inside the document."""

    loc: Loc
    """Path to the offending value, e.g. ("steps", 2, "retry", "max_attempts")."""
    reason: str
    """A complete, readable message."""
    at_key: bool = False
    """Point at the mapping key named by loc[-1] rather than at its value (unknown keys)."""
    missing: bool = False
    """A required key is absent: loc names its parent, so other problems on that line come first."""


def format_loc(loc: Sequence[str | int]) -> str:
    """`("steps", 2, "retry")` -> `steps[2].retry`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---- pydantic errors -> problems ------------------------------------------------------------


def _unwrap(tp: object) -> object:
    """Strip Annotated and Optional; of a union, keep its first model member."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [arg for arg in get_args(tp) if arg is not type(None)]
        models = [arg for arg in members if isinstance(arg, type) and issubclass(arg, BaseModel)]
        tp = models[0] if models else (members[0] if len(members) == 1 else tp)
    return tp


def _model_at(model: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model validating the mapping found at `path` inside `model`, if any."""
    tp: object = model
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            match = [f.annotation for name, f in fields.items() if part in (name, f.alias)]
            if not match:
                return None
            tp = match[0]
        elif get_origin(tp) in (list, tuple) and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _trim_loc(data: object, loc: Sequence[str | int]) -> Loc:
    """The longest prefix of `loc` that exists in `data` (drops pydantic's union tags, missing keys)."""
    kept: list[str | int] = []
    current = data
    for part in loc:
        if (isinstance(current, Mapping) and part in current) or (
                isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)):
            current = current[part]  # type: ignore[index]  # narrowed above: key of a mapping or index of a list
        else:
            break
        kept.append(part)
    return tuple(kept)


def problems_from_validation(exc: ValidationError, model: type[BaseModel], data: object,
                             prefix: Loc = (), *, skip_templates: bool = False) -> list[Problem]:
    """Turn pydantic errors into readable problems.

    With `skip_templates`, errors about a string containing `${{` are dropped: such values are
    rendered at run time and checked again then.
    """
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        value = error.get("input")
        if skip_templates and isinstance(value, str) and OPEN in value:
            continue
        loc = _trim_loc(data, error["loc"])
        where = format_loc(prefix + loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            parent = loc[:-1]
            allowed_model = _model_at(model, parent)
            fields = allowed_model.model_fields if allowed_model is not None else {}
            allowed = [f.alias or name for name, f in fields.items()]
            inside = f" in {format_loc(prefix + parent)}" if prefix + parent else ""
            reason = f"unknown key '{loc[-1]}'{inside} (allowed: {', '.join(allowed)})"
            problems.append(Problem(prefix + loc, reason, at_key=True))
            continue
        if kind == "missing":
            name = error["loc"][-1]
            reason = f"{where}: missing required key '{name}'" if where else f"missing required key '{name}'"
            problems.append(Problem(prefix + loc, reason, missing=True))
            continue
        if kind == "literal_error" and model is WorkflowSpec and len(loc) == 3 and loc[2] == "uses":
            kinds = ", ".join(sorted(AVAILABLE_KINDS))
            reason = f"{where}: unknown step kind {value!r} (valid kinds: {kinds})"
        else:
            message = _DICTIONARY.sub("a mapping", str(error["msg"]).removeprefix("Value error, "))
            reason = f"{where}: {message}" if where else message
        problems.append(Problem(prefix + loc, reason))
    return problems


# ---- the graph ------------------------------------------------------------------------------
