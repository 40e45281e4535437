"""The dev stack's Vault: demo secrets (clearly fake) for the demo workflows, and their policies."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from worker.definitions.expressions import root_reads
from worker.devstack.openbao import bootstrap_vault
from worker.secrets.policies import WORKER_POLICY, apply_policies, load_workflows, policies_for

logger = logging.getLogger(__name__)

_DEFAULT_KEYS = ("api_key", "token", "username", "password")
_KEY_IN_TEXT = re.compile(r"^secrets(?:\.(\w+)|\['([^']+)'\])(?:\.(\w+)|\['([^']+)'\])")


def _keys_read(defn_with: object, name: str) -> set[str]:
    """Keys X read as `secrets.<name>.X` in a step's `with:` (a read is at most two keys deep)."""
    keys: set[str] = set()
    for read in root_reads(defn_with):
        if read.root != "secrets" or read.key != name:
            continue
        match = _KEY_IN_TEXT.match(read.text)
        if match:
            keys.add(match.group(3) or match.group(4))
    return keys


def seed_dev_vault(addr: str, token: str, workflows_dir: Path) -> None:
    """Mount the defaults, write fake values for every declared credential that has none yet, apply policies.

    Values look like `dev-fake-<workflow>-<credential>-<key>`: obviously not real. Existing secrets are
    left alone, so a developer's own values survive a re-seed.
    """
    import hvac
    import hvac.exceptions
    import requests

    bootstrap_vault(addr, token)
    try:
        _seed(hvac.Client(url=addr, token=token, timeout=10), workflows_dir)
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise RuntimeError(f"could not seed Vault at {addr}: {type(exc).__name__}: {exc}") from exc


DEV_WORKER_ROLE = "agentrt-worker"
"""The AppRole role the dev stack's worker logs in with (as deploy/vault_init.py sets up in production)."""


def dev_worker_login(addr: str, token: str) -> dict[str, str]:
    """An AppRole login for the dev worker, carrying only the `agentrt-worker` policy (never the root token).

    Returns the environment a worker needs (AGENTRT_VAULT_ROLE_ID / AGENTRT_VAULT_SECRET_ID). The policy
    and the step token role are written by `seed_dev_vault` (apply_policies).
    """
    import hvac

    client = hvac.Client(url=addr, token=token, timeout=10)
    client.auth.approle.create_or_update_approle(
        DEV_WORKER_ROLE, token_policies=[WORKER_POLICY], token_ttl="1h", token_max_ttl="24h",
        token_type="service", secret_id_num_uses=0,
        # the worker's token needs nothing of Vault's `default` policy: its own policy grants lookup/renew-self
        token_no_default_policy=True)
    role_id = client.auth.approle.read_role_id(DEV_WORKER_ROLE)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(DEV_WORKER_ROLE)["data"]["secret_id"]
    return {"AGENTRT_VAULT_ROLE_ID": str(role_id), "AGENTRT_VAULT_SECRET_ID": str(secret_id)}


def _seed(client: Any, workflows_dir: Path) -> None:
    import hvac.exceptions

    defns, errors = load_workflows(workflows_dir)
    for error in errors:
        logger.warning("not seeding credentials of an invalid workflow file: %s", error)
    for defn in defns:
        for name, cred in defn.spec.credentials.items():
            keys: set[str] = set(_DEFAULT_KEYS)
            hook = defn.spec.on.webhook if defn.spec.on is not None else None
            if hook is not None and hook.secret == name:
                keys.add("secret")  # a webhook's HMAC secret (README, "Webhooks")
            for step in defn.spec.steps:
                keys |= _keys_read(step.with_, name)
            try:
                client.secrets.kv.v2.read_secret_version(path=cred.path, mount_point=cred.mount,
                                                         raise_on_deleted_version=True)
                continue
            except hvac.exceptions.InvalidPath:
                pass
            values = {key: f"dev-fake-{defn.name}-{name}-{key}" for key in sorted(keys)}
            client.secrets.kv.v2.create_or_update_secret(path=cred.path, secret=values, mount_point=cred.mount)
            logger.info("seeded fake credential %s for workflow %s at %s/%s", name, defn.name, cred.mount, cred.path)
    apply_policies(client, policies_for(defns))
