"""Compose service `vault-init`: initialise, unseal and configure OpenBao/Vault, then issue AppRole
secret ids to workers for as long as the stack runs.

Once, idempotently:
1. wait for the server; `sys/init` it if needed (the unseal key and root token go to `--state-dir`,
   a volume only this service mounts) and unseal it;
2. mount KV v2 at secret/, transit at transit/ and AppRole at approle/;
3. run `agentrt vault policies --apply` (one read-only policy per workflow, the worker policy and the
   step token role);
4. create the AppRole role `agentrt-worker` (token policy: the worker policy) and a narrow "issuer"
   token that may only create secret ids for it;
5. write the role id to `--approle-dir/role_id`.

Then, forever (the trusted-orchestrator pattern): keep exactly one response-wrapped secret id in
`--approle-dir/secret_id.wrapped`. A starting worker claims it by renaming it (see entrypoint.sh) and
the next one is issued within a second, so restarted or added replicas get theirs without a human.
The server is unsealed again if it restarts sealed. The root token is used only during setup.

This is a compose-sized stand-in for a platform's Vault integration (Kubernetes/Nomad auth, Vault
Agent, auto-unseal with a KMS); in production keep unseal keys with people or a KMS, not on a volume.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger("vault-init")

ROLE = "agentrt-worker"
ISSUER_POLICY = "agentrt-secret-id-issuer"


class Bao:
    """The few Vault HTTP API calls this script needs."""

    def __init__(self, addr: str, token: str | None = None) -> None:
        verify: bool | str = os.environ.get("VAULT_CACERT") or True
        self.http = httpx.Client(base_url=addr.rstrip("/"), timeout=10, verify=verify)
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
             headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 204)) -> dict[str, Any]:
        h = {**({"X-Vault-Token": self.token} if self.token else {}), **(headers or {})}
        resp = self.http.request(method, f"/v1/{path}", json=body, headers=h)
        if resp.status_code not in ok:
            raise RuntimeError(f"{method} /v1/{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json() if resp.content else {}

    def health(self) -> dict[str, Any]:
        return self.call("GET", "sys/health?uninitcode=200&sealedcode=200&standbycode=200", ok=(200,))


def wait_for_server(bao: Bao, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bao.health()
        except (httpx.HTTPError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Vault did not answer within {timeout:g}s: {exc}") from exc
            time.sleep(1)


def init_and_unseal(bao: Bao, state_dir: Path) -> str:
    """Initialise if needed, unseal if sealed; returns the root token."""
    state = state_dir / "init.json"
    health = wait_for_server(bao, 120)
    if not health.get("initialized"):
        if state.exists():
            raise RuntimeError(f"{state} exists but Vault is not initialised: the storage volume was replaced; "
                               "move the old init.json away to initialise a new Vault")
        result = bao.call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(result), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, state)
        logger.info("initialised Vault; unseal key and root token kept in %s", state)
    unseal_if_sealed(bao, state)
    return str(json.loads(state.read_text(encoding="utf-8"))["root_token"])


def unseal_if_sealed(bao: Bao, state: Path) -> None:
    if not bao.health().get("sealed"):
        return
    keys = json.loads(state.read_text(encoding="utf-8"))["keys"]
    for key in keys:
        if not bao.call("PUT", "sys/unseal", {"key": key}).get("sealed"):
            break
    # integrated storage elects itself leader a moment after unsealing; wait until it is active
    deadline = time.monotonic() + 60
    while bao.call("GET", "sys/health", ok=(200, 429, 472, 473, 501, 503)).get("standby", True):
        if time.monotonic() > deadline:
            raise RuntimeError("Vault unsealed but did not become active within 60s")
        time.sleep(0.5)
    logger.info("unsealed Vault")


def configure(addr: str, root: str, approle_dir: Path) -> str:
    """Mounts, policies, the worker role and the issuer token; returns the issuer token."""
    from worker.devstack.openbao import bootstrap_vault  # KV v2, transit, AppRole (idempotent)

    bootstrap_vault(addr, root)
    env = {**os.environ, "VAULT_ADDR": addr, "VAULT_TOKEN": root}
    try:
        from worker.secrets.policies import WORKER_POLICY
    except ImportError:  # pragma: no cover - older builds
        WORKER_POLICY = "agentrt-worker"  # noqa: N806
    bao = Bao(addr, root)
    # `agentrt vault policies --apply`, with the interpreter running this script. It exits 1 when a
    # workflow file is invalid although it applied the others: like the worker, carry on without it.
    done = subprocess.run([sys.executable, "-m", "worker", "vault", "policies", "--apply"], env=env, check=False)
    if done.returncode != 0:
        bao.call("GET", f"sys/policies/acl/{WORKER_POLICY}", ok=(200,))  # raises if nothing was applied
        logger.warning("`agentrt vault policies --apply` exited %d (see above); policies of valid workflows "
                       "were applied", done.returncode)
    bao.call("POST", f"auth/approle/role/{ROLE}", {
        "token_policies": [WORKER_POLICY], "token_ttl": "1h", "token_max_ttl": "24h",
        "secret_id_ttl": "0", "secret_id_num_uses": 0, "token_type": "service",
        # the worker policy grants what the worker needs (lookup/renew itself); nothing of `default`
        "token_no_default_policy": True})
    role_id = bao.call("GET", f"auth/approle/role/{ROLE}/role-id")["data"]["role_id"]
    bao.call("PUT", f"sys/policies/acl/{ISSUER_POLICY}", {"policy": (
        f'path "auth/approle/role/{ROLE}/secret-id" {{ capabilities = ["update"] }}\n'
        'path "auth/token/renew-self" { capabilities = ["update"] }\n')})
    issuer = bao.call("POST", "auth/token/create", {
        "policies": [ISSUER_POLICY], "no_parent": True, "period": "24h", "display_name": "secret-id-issuer"})
    write_atomic(approle_dir / "role_id", role_id)
    logger.info("configured mounts, policies and AppRole %s", ROLE)
    return str(issuer["auth"]["client_token"])


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o440)
    os.replace(tmp, path)


def issue_wrapped_secret_id(bao: Bao, wrap_ttl: str) -> str:
    resp = bao.call("POST", f"auth/approle/role/{ROLE}/secret-id", {}, headers={"X-Vault-Wrap-TTL": wrap_ttl})
    return str(resp["wrap_info"]["token"])


def serve(addr: str, issuer_token: str, approle_dir: Path, state_dir: Path, *, wrap_ttl_s: int,
          once: bool = False) -> None:
    """Keep one fresh wrapped secret id in the volume; renew the issuer token; unseal after restarts."""
    bao, anonymous = Bao(addr, issuer_token), Bao(addr)
    target = approle_dir / "secret_id.wrapped"
    last_renew = time.monotonic()
    while True:
        try:
            unseal_if_sealed(anonymous, state_dir / "init.json")
            stale = target.exists() and time.time() - target.stat().st_mtime > wrap_ttl_s / 2
            if not target.exists() or stale:
                write_atomic(target, issue_wrapped_secret_id(bao, f"{wrap_ttl_s}s"))
                logger.info("issued a wrapped secret id%s", " (replacing an unclaimed stale one)" if stale else "")
            if time.monotonic() - last_renew > 3600:
                bao.call("POST", "auth/token/renew-self", {})
                last_renew = time.monotonic()
        except (httpx.HTTPError, RuntimeError, OSError) as exc:
            logger.warning("%s (retrying)", exc)
        if once:
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Initialise and configure Vault for AgentRuntime, then issue "
                                            "wrapped AppRole secret ids to workers.")
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/agentrt/vault-init"))
    p.add_argument("--approle-dir", type=Path, default=Path("/run/agentrt/approle"))
    p.add_argument("--wrap-ttl", type=int, default=86400, help="seconds a wrapped secret id stays valid")
    p.add_argument("--setup-only", action="store_true", help="configure, issue one secret id and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    addr = os.environ.get("VAULT_ADDR")
    if not addr:
        logger.error("VAULT_ADDR is not set")
        return 2
    args.state_dir.mkdir(parents=True, exist_ok=True)
    args.approle_dir.mkdir(parents=True, exist_ok=True)
    root = init_and_unseal(Bao(addr), args.state_dir)
    issuer = configure(addr, root, args.approle_dir)
    serve(addr, issuer, args.approle_dir, args.state_dir, wrap_ttl_s=args.wrap_ttl, once=args.setup_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
