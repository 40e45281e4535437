"""Helpers for webhook tests: a workflow with `on: {webhook: ...}`, its secret in Vault and its policy applied,
an API server logged in to Vault like `agentrt dev`'s (AppRole, the agentrt-worker policy), and signing."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import textwrap
from pathlib import Path
from typing import Any

from tests.support.api_server import ApiServer, start_api
from tests.support.vault_support import root_client, uid, write_secret
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.secrets.dev import dev_worker_login
from worker.secrets.policies import apply_policies, policies_for


def hook_workflow(name: str, path: str, vault_path: str, *, inputs: str = "ticket_id: {type: string}",
                  credential: str = "hook", secret: str | None = None, extra: str = "") -> str:
    """A workflow that a signed `POST /hooks/<path>` starts; its output echoes its inputs."""
    return textwrap.dedent(f"""\
        name: {name}
        credentials:
          {credential}: {{path: {vault_path}}}
        on: {{webhook: {{path: {path}, secret: {secret or credential}}}}}
        inputs: {{{inputs}}}
        {extra}steps:
          - {{id: echo, uses: set, with: {{got: "${{{{ inputs }}}}"}}}}
        """)


def write_hook(settings: Settings, filename: str, text: str) -> Path:
    path = settings.workflows_dir / filename
    path.write_text(text, encoding="utf-8")
    return path


def grant(vault: Any, *texts: str) -> None:
    """Apply the Vault policies of these workflow files (what an operator does after reviewing them)."""
    apply_policies(root_client(vault), policies_for([load_text(t, f"<{i}>") for i, t in enumerate(texts)]))


def new_secret(vault: Any, vault_path: str | None = None, value: str | None = None) -> tuple[str, str]:
    """(vault path, secret) of a fresh webhook secret stored in Vault under the key `secret`."""
    vault_path = vault_path or f"{uid()}/webhook"
    value = value or secrets.token_hex(32)
    write_secret(vault, vault_path, {"secret": value, "api_key": "not-the-webhook-secret"})
    return vault_path, value


def vault_env(vault: Any) -> dict[str, str]:
    """The API server's Vault environment: an AppRole login with the agentrt-worker policy (no root token)."""
    apply_policies(root_client(vault), [])  # the worker policy and the agentrt-step token role
    return {"VAULT_ADDR": vault.addr, **dev_worker_login(vault.addr, vault.root_token)}


def start_hook_api(settings: Settings, vault: Any, log_path: Path, **extra: str) -> ApiServer:
    return start_api(settings, log_path, {**vault_env(vault), **extra})


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(secret: str, body: bytes, **headers: str) -> dict[str, str]:
    """Headers of a signed JSON delivery (keyword names use _ for -)."""
    return {"Content-Type": "application/json", "X-Signature": sign(secret, body),
            **{k.replace("_", "-"): v for k, v in headers.items()}}
