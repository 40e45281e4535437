"""Run inputs: defaults and type checks against the workflow's `inputs:` declaration."""

from __future__ import annotations

from typing import Any

from worker.definitions.schema import InputSpec, WorkflowSpec

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class InputError(ValueError):
    """Run inputs do not match the workflow's declaration."""


def _check(name: str, spec: InputSpec, value: Any) -> None:
    if spec.type == "any" or value is None:
        return
    allowed = _TYPES[spec.type]
    if isinstance(value, bool) and bool not in allowed:
        raise InputError(f"input {name!r} must be {spec.type}, got boolean")
    if not isinstance(value, allowed):
        raise InputError(f"input {name!r} must be {spec.type}, got {type(value).__name__}")


def resolve_inputs(spec: WorkflowSpec, given: dict[str, Any]) -> dict[str, Any]:
    """Given inputs plus defaults; raises InputError for unknown, missing or mistyped inputs."""
    if not isinstance(given, dict):
        raise InputError("inputs must be a JSON object")
    unknown = sorted(set(given) - set(spec.inputs))
    if unknown and spec.inputs:
        raise InputError(f"unknown input(s) {', '.join(unknown)} (declared: {', '.join(sorted(spec.inputs))})")
    out: dict[str, Any] = dict(given)
    for name, ispec in spec.inputs.items():
        if name in given:
            _check(name, ispec, given[name])
            continue
        required = ispec.required if ispec.required is not None else ispec.default is None
        if required:
            raise InputError(f"missing required input {name!r}")
        out[name] = ispec.default
    return out
