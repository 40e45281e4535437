"""Secrets without Vault: deferred rendering, redaction, validation, policy generation, NoSecrets."""

from __future__ import annotations

import base64
import json
import logging
import textwrap
import urllib.parse
from typing import Any

import orjson
import pytest

from worker import runlog as ev
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.engine.commands import Start
from worker.engine.scheduler import decide, expression_context
from worker.engine.state import RunState
from worker.errors import DefinitionError, StepFailed
from worker.secrets import NoSecrets, build_secret_provider
from worker.secrets.deferred import fill_secrets, marker
from worker.secrets.policies import policies_for, worker_policy, workflow_policy_name
from worker.secrets.redact import ActiveSecrets, RedactingFilter, redact

CANARY = "sk_live_Canary-7f3a9b/+=x?&y"

WF = """
name: pay
credentials:
  stripe: {path: payments/stripe}
  other: {path: team/other, mount: kv}
steps:
  - id: fetch
    uses: set
    with: {echo: "${{ inputs.note }}"}
  - id: call
    uses: http
    secrets: [stripe]
    with:
      url: "https://api.example/charge/${{ inputs.id }}"
      headers:
        Authorization: "Bearer ${{ secrets.stripe.api_key }}"
        X-Echo: "${{ steps.fetch.output.echo }}"
      json:
        whole: "${{ steps.fetch.output }}"
        list: ["${{ secrets.stripe.api_key }}", "${{ inputs.id }}", 3]
"""


def wf(text: str = WF) -> Any:
    return load_text(textwrap.dedent(text), "test.yaml")


def state_after_fetch(note: str) -> RunState:
    state = RunState(run_id="r1")
    log: list[tuple[str, str | None, dict[str, Any]]] = [
        (ev.RUN_CREATED, None, {"workflow": "pay", "def_hash": "h", "inputs": {"id": "42", "note": note}}),
        (ev.STEP_STARTED, "fetch", {"inputs": {}, "key": None}),
        (ev.STEP_COMPLETED, "fetch", {"output": {"echo": note}}),
    ]
    for seq, (type_, step, data) in enumerate(log, start=1):
        state.apply(ev.Event(type_, 1000.0 + seq, step, None, 1 if step else None, data, seq))
    return state


# ---- deferred rendering -------------------------------------------------------------------------
def test_scheduler_stores_placeholders_and_prepare_fills_only_secret_positions() -> None:
    defn = wf()
    sneaky = "${{ secrets.stripe.api_key }}"
    state = state_after_fetch(sneaky)
    [start] = decide(defn, state, 2000.0).commands
    assert isinstance(start, Start) and start.step_id == "call"
    stored = orjson.loads(orjson.dumps(start.inputs))  # what the event log holds
    assert stored["headers"]["Authorization"] == "Bearer " + marker("stripe", "api_key")
    assert stored["json"]["list"][0] == marker("stripe", "api_key")
    assert CANARY not in json.dumps(stored)

    ctx = {**expression_context(defn, state), "secrets": {"stripe": {"api_key": CANARY}}}
    filled = fill_secrets(defn.step("call").with_, stored, ctx)
    assert filled["headers"]["Authorization"] == f"Bearer {CANARY}"
    assert filled["json"]["list"] == [CANARY, "42", 3]
    assert filled["url"] == "https://api.example/charge/42"
    # data from a step output is never rendered again, even when it looks like a secret reference
    assert filled["headers"]["X-Echo"] == sneaky
    assert filled["json"]["whole"] == {"echo": sneaky}


def test_whole_credential_placeholder_is_inert_json() -> None:
    defn = wf("""
        name: w
        credentials: {c: {path: a/b}}
        steps:
          - id: s
            uses: python
            secrets: [c]
            with: {function: "m:f", args: {all: "${{ secrets.c }}", text: "x ${{ secrets.c }}"}}
        """)
    [start] = decide(defn, RunState(run_id="r"), 1.0).commands
    assert isinstance(start, Start)
    stored = orjson.loads(orjson.dumps(start.inputs))
    assert stored["args"] == {"all": {"$secret": "c"}, "text": 'x {"$secret":"c"}'}
    filled = fill_secrets(defn.step("s").with_, stored, {"secrets": {"c": {"k": "v"}}})
    assert filled["args"]["all"] == {"k": "v"}


# ---- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("snippet", "message"), [
    ("    when: \"${{ secrets.c.k == 'x' }}\"\n    with: {function: 'm:f'}\n",
     "secrets are only available in with:"),
    ("    foreach: \"${{ secrets.c.items }}\"\n    with: {function: 'm:f'}\n",
     "secrets are only available in with:"),
    ("    foreach: [1, 2]\n    with: {function: 'm:f', args: {u: \"${{ item }}:${{ secrets.c.k }}\"}}\n",
     "cannot also read item or index"),
])
def test_secret_reads_outside_with_are_refused(snippet: str, message: str) -> None:
    text = "name: w\ncredentials: {c: {path: a/b}}\nsteps:\n  - id: s\n    uses: python\n    secrets: [c]\n"
    with pytest.raises(DefinitionError) as info:
        load_text(text + snippet, "w.yaml")
    assert message in info.value.reason


def test_kinds_that_cannot_use_secrets() -> None:
    with pytest.raises(DefinitionError) as info:
        load_text("name: w\ncredentials: {c: {path: a/b}}\nsteps:\n  - id: s\n    uses: approval\n"
                  "    secrets: [c]\n    with: {prompt: hi}\n", "w.yaml")
    assert "step kind 'approval' cannot use secrets" in info.value.reason
    with pytest.raises(DefinitionError) as info:
        load_text("name: w\ncredentials: {c: {path: a/b}}\nsteps:\n  - id: s\n    uses: workflow\n"
                  "    with: {workflow: x, inputs: {t: '${{ secrets.c.k }}'}}\n", "w.yaml")
    assert "step kind 'workflow' cannot read secrets" in info.value.reason


@pytest.mark.parametrize("path", ["/abs", "a/", "a/../b", "a/*", "a/b+", 'a"b', "a//b", "."])
def test_credential_paths_must_be_plain(path: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_text(f"name: w\ncredentials: {{c: {{path: '{path}'}}}}\nsteps: [{{id: s, uses: set}}]\n", "w.yaml")
    assert "not a plain Vault path" in info.value.reason


# ---- policies -----------------------------------------------------------------------------------
def test_one_read_only_policy_per_workflow_with_exactly_its_paths() -> None:
    plain = wf("name: plain\nsteps: [{id: s, uses: set}]\n")
    [policy] = policies_for([wf(), plain])
    assert policy.name == workflow_policy_name("pay") == "agentrt-wf-pay"
    assert policy.paths == ("kv/data/team/other", "secret/data/payments/stripe")
    assert policy.hcl.count('capabilities = ["read"]') == 2
    assert "*" not in policy.hcl and "+" not in policy.hcl
    assert 'path "auth/token/create/agentrt-step"' in worker_policy().hcl


# ---- redaction ----------------------------------------------------------------------------------
def test_redaction_of_raw_base64_url_and_json_forms() -> None:
    secrets = {"stripe": {"api_key": CANARY, "short": "ab"}}
    basic = base64.b64encode(f"user:{CANARY}".encode()).decode()
    for offset in ("", "x", "xy"):  # embedded at every byte alignment of a longer base64 text
        encoded = base64.b64encode((offset + CANARY + "tail").encode()).decode()
        redacted = redact(encoded, secrets)
        assert "[redacted:stripe.api_key]" in redacted
        kept = redacted.split("[redacted:stripe.api_key]")
        assert all(len(part) <= 8 for part in kept)  # at most the bytes around it (and 2 of the secret)
    value = {
        "raw": f"token={CANARY}",
        "b64": base64.b64encode(CANARY.encode()).decode(),
        "urlsafe": base64.urlsafe_b64encode(CANARY.encode()).decode().rstrip("="),
        "basic": f"Basic {basic}",
        "url": "https://x/?k=" + urllib.parse.quote(CANARY, safe=""),
        "plus": urllib.parse.quote_plus(CANARY),
        "json": json.dumps({"k": CANARY + '"'}),
        CANARY: ["nested", {"deep": CANARY}],
        "n": 5,
        "short": "ab stays",  # shorter than 4 characters: not redacted
    }
    out = redact(value, secrets)
    text = json.dumps(out)
    for form in (CANARY, base64.b64encode(CANARY.encode()).decode().rstrip("="), urllib.parse.quote(CANARY, safe=""),
                 urllib.parse.quote_plus(CANARY), basic[8:-4]):
        assert form not in text
    assert out["raw"] == "token=[redacted:stripe.api_key]"
    assert out["short"] == "ab stays" and out["n"] == 5
    assert "[redacted:stripe.api_key]" in out


def test_log_filter_redacts_recently_fetched_values() -> None:
    active = ActiveSecrets()
    flt = RedactingFilter(active)
    record = logging.LogRecord("x", logging.INFO, "f", 1, "got %s", (CANARY,), None)
    assert flt.filter(record) and record.getMessage() == f"got {CANARY}"  # nothing fetched yet
    active.add("agentrt-wf-pay", "stripe", {"api_key": CANARY})
    record = logging.LogRecord("x", logging.INFO, "f", 1, "got %s", (CANARY,), None)
    assert flt.filter(record)
    assert CANARY not in record.getMessage()


# ---- no Vault -----------------------------------------------------------------------------------
async def test_without_vault_a_step_with_credentials_fails_clearly_and_others_run() -> None:
    provider = build_secret_provider(Settings())
    assert isinstance(provider, NoSecrets)
    defn = wf()
    with pytest.raises(StepFailed) as info:
        await provider.prepare(defn, defn.step("call"), {}, dict)
    assert not info.value.retryable
    assert "credentials are declared but VAULT_ADDR is not set" in info.value.reason
    args, secrets = await provider.prepare(defn, defn.step("fetch"), {"echo": "x"}, dict)
    assert args == {"echo": "x"} and secrets == {}
