"""The workflow file format, validated with pydantic (unknown keys are errors).

Values that may contain `${{ … }}` expressions are kept as raw JSON here; they are checked by
`worker.definitions.validate` at load time and rendered by the engine when a step starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from worker.limits.spec import LIMIT_KINDS
from worker.schedules.ticks import check_cron, check_every, check_timezone

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

StepKind = Literal["http", "llm", "tool", "agent", "approval", "python", "sleep", "set", "workflow", "wait"]
# kinds with an executor in this build; the others are rejected at load time with a clear message
AVAILABLE_KINDS: frozenset[str] = frozenset(
    {"http", "llm", "tool", "agent", "approval", "python", "sleep", "set", "workflow", "wait"}
)
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


# kinds whose `with:` may read `${{ secrets.* }}` and that may list `secrets:`: they run an executor
# that receives ctx.secrets and whose output and errors are redacted. approval, sleep and workflow
# steps never see secret values (their stored inputs would hold only placeholders).
SECRET_KINDS: frozenset[str] = frozenset({"http", "llm", "tool", "agent", "python", "set"})

# A KV v2 path as a Vault policy names it: segments of letters, digits, `_ . -`, no `.`/`..` segment,
# no globs (`*`, `+`) and no quotes, so a generated policy grants exactly this path.
_KV_PATH = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")


def _kv_path(value: str) -> str:
    if not _KV_PATH.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r} is not a plain Vault path (segments of letters, digits, _ . - "
                         "separated by /; no leading or trailing /, no . or .. segments, no * or +)")
    return value


class CredentialSpec(_Model):
    path: str = Field(min_length=1, max_length=512)
    mount: str = Field("secret", min_length=1, max_length=128)

    @field_validator("path", "mount")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        return _kv_path(value)


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
    limit: str | None = Field(None, min_length=1, max_length=100)  # a named limit of the operator's limits.yaml
    limits: list[str] = Field(default_factory=list, max_length=16)  # several (worker/limits)

    @field_validator("needs")
    @classmethod
    def _unique_needs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("needs lists a step twice")
        return value

    @field_validator("limit", "limits")
    @classmethod
    def _limit_kinds(cls, value: Any, info: ValidationInfo) -> Any:
        uses = info.data.get("uses")
        if value and uses is not None and uses not in LIMIT_KINDS:
            raise ValueError(f"a {uses} step cannot take a limit (only {', '.join(sorted(LIMIT_KINDS))} steps can)")
        if info.field_name == "limits" and len(set(value)) != len(value):
            raise ValueError("limits names a limit twice")
        return value

    @model_serializer(mode="wrap")
    def _omit_unset_limits(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave `limit`/`limits` out of the stored form while unset: a step without them keeps its hash."""
        data: dict[str, Any] = handler(self)
        if data.get("limit") is None:
            data.pop("limit", None)
        if not data.get("limits"):
            data.pop("limits", None)
        return data


class McpServerSpec(_Model):
    """One MCP server: a command to launch (stdio) or a streamable-HTTP endpoint (url)."""

    name: str | None = None  # filled in when a named declaration is copied into a step
    command: str | None = None  # stdio; `python` means the worker's own interpreter
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None  # default: the workflows directory
    url: str | None = None  # streamable HTTP
    headers: dict[str, str] = Field(default_factory=dict)
    credential: str | None = None  # `${credential.KEY}` in env/headers is filled from this credential
    timeout: Duration | None = None  # per tool call; default: the step's timeout or 60s

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("a tool server needs exactly one of command (stdio) or url (streamable HTTP)")
        return self


class ToolsFileSpec(_Model):
    """`workflows/tools.yaml`: MCP servers (and prices) shared by every workflow."""

    servers: dict[str, McpServerSpec] = Field(default_factory=dict)
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)


class ModelPrice(_Model):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


EVENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"


class EventTrigger(_Model):
    """`on: {event: {name: ticket.created}}`: every event of that name starts a run, its data as the inputs."""

    name: str = Field(pattern=EVENT_NAME)


WEBHOOK_PATH = r"^[a-z0-9][a-z0-9._-]{0,99}$"


class WebhookTrigger(_Model):
    """`on: {webhook: {path: helpdesk, secret: NAME}}`: `POST /hooks/helpdesk`, signed with HMAC-SHA256 under
    the `secret` key of the workflow's credential NAME, starts a run (see worker/api/webhooks.py)."""

    path: str
    secret: str = Field(min_length=1, max_length=200)

    @field_validator("path")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.match(WEBHOOK_PATH, value):
            raise ValueError(f"webhook path {value!r}: 1-100 characters a-z 0-9 . _ -, starting with a letter or "
                             "digit (the endpoint is POST /hooks/<path>)")
        return value


class ScheduleTrigger(_Model):
    """`on: {schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}}` or `{every: 30s}`: a run at every tick,
    exactly once across workers (worker/schedules). `inputs:` are the run's inputs; their strings may read
    `${{ tick }}` (ISO 8601, in `timezone`) and `${{ tick_unix }}`."""

    cron: str | None = None  # five fields, read in `timezone`
    every: Duration | None = None  # whole seconds, at least 1s; ticks are multiples of it since the epoch
    timezone: str = "UTC"
    catch_up: Literal["latest", "all", "none"] = "latest"  # what happens to ticks missed while nobody fired
    inputs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("every")
    @classmethod
    def _every(cls, value: float | None) -> float | None:
        return None if value is None else check_every(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _one_cadence(self) -> ScheduleTrigger:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of cron (e.g. '0 2 * * *') or every (e.g. 30s)")
        return self


class TriggerSpec(_Model):
    """What starts runs of the workflow besides a person or a service asking (`on:`)."""

    event: EventTrigger | None = None
    webhook: WebhookTrigger | None = None
    schedule: ScheduleTrigger | None = None


Priority = Literal["high", "normal", "low"]
"""A run's priority (see worker/store/concurrency.py and worker/bus/intake.py for what it changes)."""


class ConcurrencySpec(_Model):
    """`concurrency: {key: "${{ inputs.customer_id }}", limit: 2, on_full: queue}`: at most `limit` runs of the
    workflow per key value are active at once (checked in worker/definitions/flow.py, kept in Postgres by
    worker/store/concurrency.py). The key may read only `inputs`; it is rendered when a run is created."""

    key: str = Field(min_length=1, max_length=4096)
    limit: StrictInt = Field(ge=1, le=100_000)
    on_full: Literal["queue", "cancel_newest", "cancel_oldest"] = "queue"


class BudgetSpec(_Model):
    """`budget: {tokens_per_run: 200000, usd_per_run: 2.00, usd_per_day: 50.00, on_exceed: ask}`: an LLM call
    (an `llm` step, or one turn of an `agent` step) that would take the run or the workflow's day over a budget
    does not go out: the run asks a human (`ask`: approve lets this run go on past its budgets, reject fails the
    step) or the step fails (`fail`). Checked before each call with its estimated tokens (prompt estimate +
    max_tokens) and cost (the price table), across workers (worker/budgets)."""

    tokens_per_run: StrictInt | None = Field(None, gt=0, le=10**12)
    usd_per_run: float | None = Field(None, gt=0, le=10**9)
    usd_per_day: float | None = Field(None, gt=0, le=10**9)
    on_exceed: Literal["ask", "fail"] = "ask"

    @model_validator(mode="after")
    def _something(self) -> BudgetSpec:
        if self.tokens_per_run is None and self.usd_per_run is None and self.usd_per_day is None:
            raise ValueError("a budget needs at least one of tokens_per_run, usd_per_run, usd_per_day")
        return self


class WorkflowSpec(_Model):
    name: str = Field(pattern=WORKFLOW_NAME)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    credentials: dict[str, CredentialSpec] = Field(default_factory=dict)
    tools: dict[str, McpServerSpec] = Field(default_factory=dict)  # MCP servers for tool/agent steps
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)  # model name -> price, for llm/agent cost
    defaults: StepDefaults | None = None
    steps: list[StepSpec] = Field(min_length=1, max_length=1000)
    output: Any = None  # expression template; default: the output of the last step
    encrypt_payloads: bool = False  # store step inputs/outputs as Vault transit ciphertext (needs Vault)
    on: TriggerSpec | None = None  # what starts runs besides a caller (events, webhooks, schedules)
    concurrency: ConcurrencySpec | None = None  # at most `limit` active runs per key value
    priority: Priority = "normal"  # of its runs, unless a run is started with its own
    budget: BudgetSpec | None = None  # token and cost budgets of its LLM calls (worker/budgets)

    @model_serializer(mode="wrap")
    def _omit_flow_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave `concurrency` and `priority` out of the stored form while unset: a file that does not use them
        keeps the content hash it had before they existed (no new version appears on upgrade)."""
        data: dict[str, Any] = handler(self)
        if data.get("concurrency") is None:
            data.pop("concurrency", None)
        if data.get("priority") == "normal":
            data.pop("priority", None)
        if data.get("budget") is None:
            data.pop("budget", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _embed_declarations(cls, data: Any) -> Any:
        """Copy the workflow's named tool servers and price table into the steps that use them.

        The step's arguments then carry everything its executor needs, and a run is pinned to the
        exact declarations it started with (they are part of the definition's hash). Names not
        declared here are looked up in the shared `tools.yaml` when the step runs.
        """
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            return data
        servers: dict[str, Any] = data["tools"] if isinstance(data.get("tools"), dict) else {}
        pricing: dict[str, Any] = data["pricing"] if isinstance(data.get("pricing"), dict) else {}

        def resolve(ref: Any) -> Any:
            if isinstance(ref, str) and isinstance(servers.get(ref), dict):
                return {**servers[ref], "name": ref}
            return ref

        steps = []
        for step in data["steps"]:
            if isinstance(step, dict) and isinstance(step.get("with"), dict) and step.get("uses") in (
                    "tool", "agent", "llm"):
                args = dict(step["with"])
                if step["uses"] == "tool" and "server" in args:
                    args["server"] = resolve(args["server"])
                if step["uses"] == "agent" and isinstance(args.get("servers"), list):
                    args["servers"] = [resolve(ref) for ref in args["servers"]]
                if step["uses"] in ("llm", "agent") and pricing and "pricing" not in args:
                    args["pricing"] = pricing
                step = {**step, "with": args}
            steps.append(step)
        return {**data, "steps": steps}


class StepDefaults(_Model):
    retry: RetryPolicy | None = None
    timeout: Duration | None = None


WorkflowSpec.model_rebuild()
ToolsFileSpec.model_rebuild()
