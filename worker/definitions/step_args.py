"""The `with:` arguments of each step kind (`ARGS_MODELS`), validated with pydantic.

Checked at load time for unknown/missing keys (values holding `${{ … }}` are skipped then); checked
again for types after rendering, when the step starts. The rest of the file format is in
`worker.definitions.schema`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from worker.definitions.schema import EVENT_NAME, WORKFLOW_NAME, Duration, McpServerSpec, ModelPrice, _Model


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


class WaitArgs(_Model):
    """`uses: wait`: park the run until an outside event of this name (and key) arrives, or the timeout.

    An event received up to `lookback` before the step began waiting counts too (it won the race);
    default: the worker's AGENTRT_EVENT_LOOKBACK (1h). Without `key`, any event of the name matches.
    """

    event: str = Field(pattern=EVENT_NAME)
    key: str | None = None
    timeout: Duration | None = None  # then the output is {received: false}; none: wait until cancelled
    lookback: Duration | None = Field(None, ge=0)

    @field_validator("key", mode="before")
    @classmethod
    def _key_text(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("an event key is text or a whole number")
        text = str(value)
        if not text or len(text) > 500 or not text.isprintable():
            raise ValueError("an event key is 1-500 printable characters")
        return text


class ApprovalArgs(_Model):
    prompt: str
    context: Any = None
    timeout: Duration | None = None
    # escalate: the task stays open past its deadline, flagged as escalated (nothing is decided for you)
    on_timeout: Literal["approve", "reject", "fail", "escalate"] = "reject"
    approvers: list[str] = Field(default_factory=list)  # user names or `group:<name>`; empty: anyone allowed
    min_approvals: int = Field(1, ge=1, le=20)
    forbid_requester: bool = False  # the person who started the run may not approve it


class WorkflowArgs(_Model):
    workflow: str = Field(pattern=WORKFLOW_NAME)
    inputs: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(_Model):
    role: Literal["system", "user", "assistant"]
    content: str


class LlmArgs(_Model):
    """A chat completion (`llm`), and the model part of an `agent`."""

    provider: Literal["openai", "anthropic", "ollama"] = "openai"  # openai: any OpenAI-compatible API
    model: str = Field(min_length=1)
    base_url: str | None = None  # default: the provider's public API (ollama: 127.0.0.1:11434)
    base_url_env: str | None = None  # an environment variable holding the base URL (used when it is set)
    api_key_env: str | None = None  # an environment variable holding the API key
    credential: str | None = None  # a credential (from Vault) whose `api_key` is the key
    api_key_header: str | None = None  # e.g. `api-key` for Azure OpenAI; default per provider
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)  # e.g. {api-version: ...} for Azure OpenAI
    system: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] = Field(default_factory=list)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # JSON schema of a structured answer
    timeout: Duration | None = None  # per request; default: the step timeout or 120s
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)  # model -> USD per 1M tokens
    # false: one plain request per call, nothing on the run's live stream (default: stream, worker/streams)
    stream: bool = True

    @model_validator(mode="after")
    def _has_input(self) -> LlmArgs:
        if self.prompt is None and not self.messages:
            raise ValueError("give a prompt or messages")
        return self


class ToolArgs(_Model):
    server: str | McpServerSpec  # a name (workflow `tools:` or tools.yaml) or an inline declaration
    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration | None = None  # per call; default: the server's, else the step timeout, else 60s


class AgentArgs(LlmArgs):
    servers: list[str | McpServerSpec] = Field(default_factory=list)
    tools: list[str] | None = None  # only these tools of the servers (default: all)
    approve_tools: list[str] = Field(default_factory=list)  # ask a human before calling these
    approval_timeout: Duration | None = None  # then the call counts as rejected
    max_turns: int = Field(10, ge=1, le=200)  # LLM calls
    token_budget: int | None = Field(None, ge=1)  # total tokens over all LLM calls
    tool_timeout: Duration | None = None  # per tool call; default 60s


# `set` takes any mapping of names to values/expressions: its output is that mapping rendered.
ARGS_MODELS: dict[str, type[_Model] | None] = {
    "http": HttpArgs,
    "llm": LlmArgs,
    "tool": ToolArgs,
    "agent": AgentArgs,
    "python": PythonArgs,
    "sleep": SleepArgs,
    "approval": ApprovalArgs,
    "workflow": WorkflowArgs,
    "wait": WaitArgs,
    "set": None,
}
