"""The egress policy: one check for every outbound call a workflow can cause (http, llm, agent, MCP over HTTP).

`EgressPolicy.from_settings(settings)` is built once per executor. `await policy.check(url)` is

1. the host allow-list of the deployment, `AGENTRT_EGRESS_ALLOWED_HOSTS` (exact names, `*.example.com`
   suffix patterns, IPs and CIDR networks; a name matches a network when every address it resolves to is
   inside): when it is set, any other host is refused. Unset: any public host;
2. the address guard (`worker.egress.netguard`): loopback, private, link-local and metadata addresses are
   refused unless listed in `AGENTRT_HTTP_ALLOWED_HOSTS`.

MCP servers declared in the operator's `tools.yaml` are operator code: they pass the address guard but are
exempt from the host allow-list (`operator=True`). Servers a workflow file declares are not.

Keys read from the worker's environment (`api_key_env`) follow a stricter rule, `check_key_destination`:
they go only to the provider's own API host over https, or to hosts / base URLs the operator lists in
`AGENTRT_STEP_ENV_HOSTS`. A Vault credential (`credential:`) belongs to the workflow and may go wherever the
workflow says, through `check`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from worker.config import Settings
from worker.egress.envnames import EnvField, check_allow_list, refusal
from worker.egress.hosts import HostList
from worker.egress.netguard import check_url, display, parse_ip_literal, resolve
from worker.errors import StepFailed


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What a workflow may reach over the network, and where an environment key may go."""

    http_allowed_hosts: tuple[str, ...]
    """`AGENTRT_HTTP_ALLOWED_HOSTS`: private/loopback addresses the address guard lets through."""
    allowed_hosts: HostList
    """`AGENTRT_EGRESS_ALLOWED_HOSTS`; empty: any public host."""
    env_allow: tuple[str, ...]
    """`AGENTRT_STEP_ENV_ALLOW`: variables `api_key_env` / `base_url_env` may name."""
    env_hosts: HostList
    """`AGENTRT_STEP_ENV_HOSTS`: hosts and base URLs (besides the provider's own) an environment key may go to."""
    workflow_stdio_tools: bool
    """`AGENTRT_WORKFLOW_STDIO_TOOLS`: may workflow files declare stdio MCP servers (commands)?"""

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """The deployment's policy; a ConfigError for a setting that is invalid or names a forbidden variable."""
        return cls(
            http_allowed_hosts=settings.http_allowed_hosts,
            allowed_hosts=HostList.parse(settings.egress_allowed_hosts, "AGENTRT_EGRESS_ALLOWED_HOSTS"),
            env_allow=check_allow_list(settings.step_env_allow),
            env_hosts=HostList.parse(settings.step_env_hosts, "AGENTRT_STEP_ENV_HOSTS", urls=True),
            workflow_stdio_tools=settings.workflow_stdio_tools,
        )

    async def check(self, url: str, *, operator: bool = False) -> None:
        """Raise a non-retryable StepFailed unless a workflow may reach `url` (the host allow-list, then the
        address guard). `operator`: the URL is the operator's own (`tools.yaml`), exempt from the allow-list."""
        if self.allowed_hosts and not operator:
            await self._check_listed(url)
        await check_url(url, self.http_allowed_hosts)

    async def _check_listed(self, url: str) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return  # the address guard refuses it with the reason
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return
        host = parsed.host
        if self.allowed_hosts.match_name(host):
            return
        if self.allowed_hosts.networks and parse_ip_literal(host) is None:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            if self.allowed_hosts.match_addresses(await resolve(host, port)):
                return
        raise StepFailed(
            f"refusing to reach {display(url)}: {host} is not in AGENTRT_EGRESS_ALLOWED_HOSTS "
            f"({', '.join(self.allowed_hosts.entries)}); ask the operator to add it", retryable=False)

    def read_env(self, name: str, field: EnvField) -> str | None:
        """The value of an environment variable a step names, if the policy lets workflows read it."""
        reason = refusal(name, field, self.env_allow)
        if reason is not None:
            raise StepFailed(f"{reason} (refused when the step ran; nothing was read)", retryable=False)
        return os.environ.get(name) or None

    def check_key_destination(self, url: str, variable: str, provider: str, own: tuple[str, ...]) -> None:
        """Raise a non-retryable StepFailed unless a key from `variable` (the worker's environment) may go to
        `url`: `own` are the provider's API hosts (`Provider.key_hosts`)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise StepFailed(f"invalid URL {display(url)}: {exc}", retryable=False) from exc
        host = parsed.host.lower().rstrip(".")
        if parsed.scheme == "https" and host in own:
            return
        if self.env_hosts.match_url(parsed):
            return
        where = f"{provider}'s own API ({', '.join(f'https://{h}' for h in own)})" if own else "no host by default"
        raise StepFailed(
            f"not sending the key from {variable} to {host or display(url)}: a key from the worker's environment "
            f"goes only to {where} or to hosts the operator lists in AGENTRT_STEP_ENV_HOSTS; nothing was sent. "
            f"Use `credential:` with a Vault credential for this host, or ask the operator to add {host} to "
            "AGENTRT_STEP_ENV_HOSTS", retryable=False)

    def stdio_refusal(self, name: str) -> StepFailed | None:
        """The failure for a workflow-declared stdio tool server, unless the operator opted in."""
        if self.workflow_stdio_tools:
            return None
        return StepFailed(
            f"tool server {name!r}: a workflow file may not declare a stdio server (a command the worker would "
            "run); declare it in the operator's tools.yaml, use an HTTP server (url:), or ask the operator to "
            "set AGENTRT_WORKFLOW_STDIO_TOOLS=1 (refused when the step ran)", retryable=False)
