"""`agentrt doctor`: the Vault and OTLP checks (services a worker can run without: optional, or warn-only)."""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from worker.config import Settings
from worker.ops.check import TIMEOUT, Check

# -- Vault ---------------------------------------------------------------------------------------
_HEALTH = {200: "initialized, unsealed, active", 429: "unsealed standby", 472: "DR secondary",
           473: "performance standby", 501: "not initialized", 503: "sealed"}


async def check_vault(settings: Settings, env: Mapping[str, str]) -> Check:
    addr = settings.vault_addr
    has_creds = bool(settings.vault_token or settings.vault_role_id)
    if not addr:
        if has_creds:
            return Check("vault", "fail", "credentials are set but VAULT_ADDR is not",
                         ["Set VAULT_ADDR to the Vault/OpenBao API address (e.g. https://vault:8200)."])
        return Check("vault", "skip", "VAULT_ADDR is not set: steps that name `secrets:` will fail",
                     ["Set VAULT_ADDR and VAULT_TOKEN (or AGENTRT_VAULT_ROLE_ID/SECRET_ID) to use credentials."])
    verify: bool | str = env.get("VAULT_CACERT") or True
    if isinstance(verify, str) and not await asyncio.to_thread(os.path.isfile, verify):
        return Check("vault", "fail", f"{addr}: VAULT_CACERT={verify} is not a readable file")
    try:
        async with httpx.AsyncClient(base_url=addr, timeout=TIMEOUT, verify=verify) as http:
            resp = await http.get("/v1/sys/health", params={"standbyok": "true", "perfstandbyok": "true"})
            c = Check("vault", "ok", f"{addr}: reachable")
            state = _HEALTH.get(resp.status_code, f"HTTP {resp.status_code}")
            body = _json(resp)
            c.facts.update(health=state, version=body.get("version"), sealed=body.get("sealed"),
                           initialized=body.get("initialized"))
            if resp.status_code == 503 or body.get("sealed"):
                c.worst("fail", "Vault is sealed: unseal it (bao operator unseal) before workers can read secrets.")
            elif resp.status_code == 501:
                c.worst("fail", "Vault is not initialized: run `bao operator init` (the compose stack's "
                                "vault-init service does this).")
            elif resp.status_code not in _HEALTH:
                c.worst("fail", f"unexpected answer from /v1/sys/health: HTTP {resp.status_code}.")
            if c.status != "fail":
                await _check_vault_auth(http, settings, c)
            c.summary = f"{addr}: {state}" + (f", version {body['version']}" if body.get("version") else "")
            return c
    except httpx.HTTPError as exc:
        return Check("vault", "fail", f"{addr}: not reachable",
                     [f"{type(exc).__name__}: {exc or 'no answer'}. Is VAULT_ADDR right (scheme, host, port)?"
                      + (" For TLS, VAULT_CACERT must name the CA that signed Vault's certificate."
                         if addr.startswith("https") else "")])


async def _check_vault_auth(http: httpx.AsyncClient, settings: Settings, c: Check) -> None:
    if settings.vault_token:
        resp = await http.get("/v1/auth/token/lookup-self", headers={"X-Vault-Token": settings.vault_token})
        if resp.status_code == 200:
            data = _json(resp).get("data") or {}
            policies = data.get("policies") or []
            ttl = data.get("ttl") or 0
            c.facts.update(token_policies=policies, token_ttl=ttl, token_renewable=data.get("renewable"))
            c.details.append(f"VAULT_TOKEN is valid: policies {', '.join(policies) or '-'}, "
                             + ("no expiry" if not ttl else f"expires in {ttl}s"))
            if "root" in policies:
                c.worst("warn", "VAULT_TOKEN is a root token: give workers an AppRole with the policies from "
                                "`agentrt vault policies` instead.")
            elif ttl and ttl < 3600 and not data.get("renewable"):
                c.worst("warn", f"VAULT_TOKEN expires in {ttl}s and is not renewable.")
        else:
            c.worst("fail", f"VAULT_TOKEN was refused (HTTP {resp.status_code}): it is expired, revoked or "
                            "belongs to another Vault.")
    elif settings.vault_role_id:
        # Logging in would spend a use of the secret id (wrapped or num_uses-limited ones are single use).
        c.details.append("AppRole credentials are set (AGENTRT_VAULT_ROLE_ID/SECRET_ID); not tested, because "
                         "logging in would spend a use of the secret id.")
        c.facts["auth"] = "approle"
    else:
        c.worst("fail", "VAULT_ADDR is set but there are no credentials: set AGENTRT_VAULT_ROLE_ID and "
                        "AGENTRT_VAULT_SECRET_ID (or VAULT_TOKEN).")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- OpenTelemetry -------------------------------------------------------------------------------
def otlp_target(env: Mapping[str, str]) -> tuple[str, str, int] | None:
    """(endpoint, host, port) of the OTLP trace exporter from the standard variables, or None."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    default = 4317 if protocol == "grpc" else 4318
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return endpoint, parts.hostname or "", port


async def check_otlp(env: Mapping[str, str]) -> Check:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none":
        return Check("otlp", "skip", "tracing is disabled (OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none)")
    target = otlp_target(env)
    if target is None:
        return Check("otlp", "skip", "OTEL_EXPORTER_OTLP_ENDPOINT is not set: spans are not exported",
                     ["Set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://jaeger:4317) to see traces."])
    endpoint, host, port = target
    if not host or port <= 0:
        return Check("otlp", "fail", f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r} is not a valid URL")
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        # Tracing is not required for runs to progress: a dead collector loses spans, not work.
        return Check("otlp", "warn", f"{endpoint}: TCP {host}:{port} not reachable ({reason})",
                     ["Spans are dropped until the collector is back; runs are not affected."])
    return Check("otlp", "ok", f"{endpoint}: TCP {host}:{port} reachable", facts={"host": host, "port": port})
