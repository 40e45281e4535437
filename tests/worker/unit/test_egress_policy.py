"""The egress policy's pure rules: host patterns, environment names, where an environment key may go,
which tool servers a workflow file may declare. No services (IP literals only: no DNS)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace

import httpx
import pytest

from worker.config import Settings
from worker.definitions.loader import load_text
from worker.egress.checks import workflow_problems
from worker.egress.envnames import check_allow_list, refusal
from worker.egress.hosts import HostList
from worker.egress.policy import EgressPolicy
from worker.egress.toolservers import stdio_environment
from worker.errors import ConfigError, DefinitionError, StepFailed

DEFAULT_ALLOW = Settings().step_env_allow


# -- host lists -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "listed"), [
    ("api.example.com", True),
    ("API.Example.COM.", True),  # case and a trailing dot do not matter
    ("deep.api.example.com", True),
    ("example.com", False),  # *.example.com is the subdomains, not the apex
    ("evilexample.com", False),
    ("example.com.evil.net", False),
    ("models.internal", True),
    ("models.internal.evil.net", False),
    ("10.1.2.3", True),
    ("11.0.0.1", False),
    ("[2001:db8::5]", True),
])
def test_host_patterns(host: str, listed: bool) -> None:
    hosts = HostList.parse(["*.example.com", "models.internal", "10.0.0.0/8", "2001:db8::/32"], "X")
    assert hosts.match_name(host) is listed


@pytest.mark.parametrize(("entry", "message"), [
    ("*", "'*' is only allowed as a leading '*.'"),
    ("*.com", "never a whole top-level domain"),
    ("api.*.com", "'*' is only allowed"),
    ("10.0.0.0/33", "not a valid network"),
    ("https://api.example.com", "not a URL"),
    ("bad host!", "not a host name"),
])
def test_a_bad_entry_is_a_config_error_naming_the_variable(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        HostList.parse(["ok.example.com", entry], "AGENTRT_EGRESS_ALLOWED_HOSTS")
    assert str(info.value).startswith("AGENTRT_EGRESS_ALLOWED_HOSTS: ")


def test_a_base_url_entry_covers_its_own_paths_only() -> None:
    hosts = HostList.parse(["http://127.0.0.1:8080/v1"], "AGENTRT_STEP_ENV_HOSTS", urls=True)
    assert hosts.match_url(httpx.URL("http://127.0.0.1:8080/v1/chat/completions"))
    for other in ("http://127.0.0.1:8080/v10/chat/completions", "https://127.0.0.1:8080/v1/chat/completions",
                  "http://127.0.0.1:8081/v1/chat/completions", "http://127.0.0.2:8080/v1/chat/completions"):
        assert not hosts.match_url(httpx.URL(other)), other


# -- environment names ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["VAULT_TOKEN", "vault_token", "Vault_Token", "VAULT_ADDR", "BAO_TOKEN",
                                  "AGENTRT_DATABASE_URL", "agentrt_vault_secret_id", "AGENTRT_CANARY_SECRET"])
def test_the_workers_own_variables_can_never_be_named(name: str) -> None:
    # not even when the operator's list names them (that list is refused at start, see below)
    reason = refusal(name, "api_key_env", (name,))
    assert reason is not None and "worker's own variable" in reason and "credential:" in reason


def test_a_variable_not_allowed_names_the_setting_and_the_alternative() -> None:
    reason = refusal("AWS_SECRET_ACCESS_KEY", "api_key_env", DEFAULT_ALLOW)
    assert reason is not None
    assert "AGENTRT_STEP_ENV_ALLOW" in reason and "credential:" in reason and "OPENAI_API_KEY" in reason
    assert refusal("OPENAI_API_KEY", "api_key_env", DEFAULT_ALLOW) is None
    assert refusal("ANTHROPIC_API_KEY", "api_key_env", DEFAULT_ALLOW) is None
    assert refusal("openai_api_key", "api_key_env", DEFAULT_ALLOW) is not None  # another variable on Linux


def test_the_demo_model_url_is_a_base_url_only() -> None:
    assert refusal("AGENTRT_DEMO_MODEL_URL", "base_url_env", DEFAULT_ALLOW) is None
    assert refusal("AGENTRT_DEMO_MODEL_URL", "api_key_env", DEFAULT_ALLOW) is not None
    assert refusal("agentrt_demo_model_url", "base_url_env", ("agentrt_demo_model_url",)) is not None


@pytest.mark.parametrize("names", [("OPENAI_API_KEY", "VAULT_TOKEN"), ("vault_addr",), ("BAO_TOKEN",),
                                   ("AGENTRT_DATABASE_URL",)])
def test_an_allow_list_naming_a_forbidden_variable_is_a_config_error(names: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="AGENTRT_STEP_ENV_ALLOW names"):
        EgressPolicy.from_settings(Settings(step_env_allow=names))
    assert check_allow_list(("AGENTRT_DEMO_MODEL_URL", "MY_KEY")) == ("AGENTRT_DEMO_MODEL_URL", "MY_KEY")


async def test_reading_a_refused_variable_at_run_time_fails_without_reading(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.worker-token")
    policy = EgressPolicy.from_settings(Settings())
    with pytest.raises(StepFailed) as info:
        policy.read_env("VAULT_TOKEN", "api_key_env")
    assert not info.value.retryable and "s.worker-token" not in info.value.reason
    monkeypatch.setenv("OPENAI_API_KEY", "sk-allowed")
    assert policy.read_env("OPENAI_API_KEY", "api_key_env") == "sk-allowed"


# -- where an environment key may go ------------------------------------------------------------
def test_an_environment_key_goes_to_its_providers_host_over_https_or_to_listed_hosts() -> None:
    policy = EgressPolicy.from_settings(Settings(step_env_hosts=("llm.internal", "http://127.0.0.1:9/v1")))
    own = ("api.openai.com",)
    policy.check_key_destination("https://api.openai.com/v1/chat/completions", "OPENAI_API_KEY", "openai", own)
    policy.check_key_destination("http://llm.internal:8000/v1/chat/completions", "OPENAI_API_KEY", "openai", own)
    policy.check_key_destination("http://127.0.0.1:9/v1/chat/completions", "OPENAI_API_KEY", "openai", own)
    for url in ("http://api.openai.com/v1/chat/completions",  # cleartext
                "https://api.openai.com.evil.net/v1/chat/completions",
                "https://attacker.example/v1/chat/completions",
                "http://127.0.0.1:10/v1/chat/completions"):
        with pytest.raises(StepFailed) as info:
            policy.check_key_destination(url, "OPENAI_API_KEY", "openai", own)
        assert not info.value.retryable
        assert "OPENAI_API_KEY" in info.value.reason and "AGENTRT_STEP_ENV_HOSTS" in info.value.reason
        assert httpx.URL(url).host in info.value.reason and "nothing was sent" in info.value.reason


# -- the host allow-list --------------------------------------------------------------------------
async def test_the_egress_allow_list_refuses_other_hosts_and_names_the_variable() -> None:
    policy = EgressPolicy.from_settings(Settings(egress_allowed_hosts=("8.8.8.0/24", "api.example.com")))
    await policy.check("https://8.8.8.8/dns")
    with pytest.raises(StepFailed) as info:
        await policy.check("https://1.1.1.1/dns-query?token=secret")
    assert not info.value.retryable and "AGENTRT_EGRESS_ALLOWED_HOSTS" in info.value.reason
    assert "1.1.1.1" in info.value.reason and "secret" not in info.value.reason
    await policy.check("https://1.1.1.1/dns-query", operator=True)  # tools.yaml: the operator's own
    # the address guard still applies to the operator's URLs and to listed hosts
    with pytest.raises(StepFailed, match="AGENTRT_HTTP_ALLOWED_HOSTS"):
        await EgressPolicy.from_settings(Settings(egress_allowed_hosts=("10.0.0.0/8",))).check("http://10.0.0.1/")
    await EgressPolicy.from_settings(Settings()).check("https://1.1.1.1/")  # unset: any public host


# -- stdio environment ---------------------------------------------------------------------------
def test_a_stdio_server_inherits_only_the_basics_plus_its_declared_env() -> None:
    source = {"PATH": "/usr/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "VAULT_TOKEN": "s.x", "BAO_TOKEN": "b",
              "AGENTRT_DATABASE_URL": "postgresql://u:p@db/x", "AWS_SECRET_ACCESS_KEY": "aws", "TERM": "() { x; }"}
    env = stdio_environment({"MCP_TOKEN": "declared"}, source)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "MCP_TOKEN": "declared"}


# -- load-time problems, located ------------------------------------------------------------------
def _load(text: str, settings: Settings) -> None:
    load_text(textwrap.dedent(text).lstrip(), "wf.yaml", checks=[lambda spec: workflow_problems(spec, settings)])


@pytest.mark.parametrize("name", ["VAULT_TOKEN", "vault_token", "AGENTRT_DATABASE_URL", "BAO_TOKEN",
                                  "AWS_SECRET_ACCESS_KEY", "${{ inputs.var }}"])
def test_an_env_name_is_refused_at_its_line_and_column(name: str) -> None:
    with pytest.raises(DefinitionError) as info:
        _load(f"""
            name: w
            inputs: {{var: {{type: string, default: X}}}}
            steps:
              - id: ask
                uses: llm
                with:
                  model: m
                  prompt: hi
                  api_key_env: "{name}"
            """, Settings())
    assert (info.value.line, info.value.column) == (9, 20)
    assert "api_key_env" in info.value.reason


def test_stdio_servers_in_a_workflow_are_refused_at_the_command_key_unless_opted_in() -> None:
    text = """
        name: w
        tools:
          web: {url: "https://mcp.example/mcp"}
          shell: {command: sh, args: [-c, "env"]}
        steps:
          - id: t
            uses: tool
            with: {server: web, tool: x}
          - id: u
            uses: agent
            with:
              model: m
              prompt: hi
              servers: [web, {command: python, args: [x.py]}]
        """
    with pytest.raises(DefinitionError) as info:
        _load(text, Settings())
    assert (info.value.line, info.value.column) == (4, 11) and "AGENTRT_WORKFLOW_STDIO_TOOLS" in info.value.reason
    without_tools = text.replace('          shell: {command: sh, args: [-c, "env"]}\n', "")
    with pytest.raises(DefinitionError) as info:
        _load(without_tools, Settings())
    assert (info.value.line, info.value.column) == (13, 23)  # the inline declaration's command
    _load(text, replace(Settings(), workflow_stdio_tools=True))
