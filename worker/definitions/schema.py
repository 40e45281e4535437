"""The workflow file format, validated with pydantic (unknown keys are errors).

Values that may contain `${{ … }}` expressions are kept as raw JSON here; they are checked by
`worker.definitions.validate` at load time and rendered by the engine when a step starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Turn `500ms`, `30s`, `5m`, `4h`, `1d` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like 30s, 5m, 4h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 30s, 5m, 4h, 1d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
WORKFLOW_NAME = r"^[a-z0-9][a-z0-9_.-]{0,99}$"

StepKind = Literal["http", "llm", "tool", "agent", "approval", "python", "sleep", "set", "workflow"]
# kinds with an executor in this build; the others are rejected at load time with a clear message
AVAILABLE_KINDS: frozenset[str] = frozenset({"http", "approval", "python", "sleep", "set", "workflow"})
# kinds whose calls reach outside the runtime (they get idempotency keys and the uncertain-effect policy)
EXTERNAL_KINDS: frozenset[str] = frozenset({"http", "llm", "tool", "agent", "python"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(_Model):
    max_attempts: int = Field(3, ge=1, le=1000)
    initial_interval: Duration = 1.0
    backoff: float = Field(2.0, ge=1.0, le=100.0)
    max_interval: Duration = 60.0
    jitter: float = Field(0.1, ge=0.0, le=1.0)


DEFAULT_RETRY = RetryPolicy()


class InputSpec(_Model):
    type: Literal["string", "number", "integer", "boolean", "object", "array", "any"] = "any"
    description: str = ""
    default: Any = None
    required: bool | None = None  # default: required when no default is given


class CredentialSpec(_Model):
    path: str = Field(min_length=1)
    mount: str = "secret"


class StepSpec(_Model):
    id: str = Field(pattern=STEP_ID)
    uses: StepKind
    name: str | None = None
    description: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] | None = None  # None: the previous step in the file
    when: str | bool | None = None
    foreach: Any = None  # an expression (or literal list) evaluated to a list
    retry: RetryPolicy | None = None
    timeout: Duration | None = None
    idempotent: bool = True
    continue_on_error: bool = False
    secrets: list[str] = Field(default_factory=list)

    @field_validator("needs")
    @classmethod
    def _unique_needs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("needs lists a step twice")
        return value


class WorkflowSpec(_Model):
    name: str = Field(pattern=WORKFLOW_NAME)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    credentials: dict[str, CredentialSpec] = Field(default_factory=dict)
    defaults: StepDefaults | None = None
    steps: list[StepSpec] = Field(min_length=1, max_length=1000)
    output: Any = None  # expression template; default: the output of the last step


class StepDefaults(_Model):
    retry: RetryPolicy | None = None
    timeout: Duration | None = None


WorkflowSpec.model_rebuild()


# ---- `with:` arguments per step kind -------------------------------------------------------
# Checked at load time for unknown/missing keys; checked again for types after rendering.


class HttpArgs(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    json_: Any = Field(None, alias="json")
    body: str | None = None
    expect_status: list[int] | None = None  # default: any 2xx
    timeout: Duration | None = None  # per request; default: the step timeout or 30s
    follow_redirects: bool = False
    max_response_bytes: int = Field(10 * 1024 * 1024, ge=1)


class PythonArgs(_Model):
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = Field(default_factory=dict)


class SleepArgs(_Model):
    duration: Duration | None = None
    until: str | None = None  # ISO-8601 timestamp


class ApprovalArgs(_Model):
    prompt: str
    context: Any = None
    timeout: Duration | None = None
    on_timeout: Literal["approve", "reject", "fail"] = "reject"
    approvers: list[str] = Field(default_factory=list)


class WorkflowArgs(_Model):
    workflow: str = Field(pattern=WORKFLOW_NAME)
    inputs: dict[str, Any] = Field(default_factory=dict)


# `set` takes any mapping of names to values/expressions: its output is that mapping rendered.
ARGS_MODELS: dict[str, type[_Model] | None] = {
    "http": HttpArgs,
    "python": PythonArgs,
    "sleep": SleepArgs,
    "approval": ApprovalArgs,
    "workflow": WorkflowArgs,
    "set": None,
}
