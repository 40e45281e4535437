"""Helpers for Vault tests: unique names, secrets, AppRoles, and searching stored data for a canary."""

from __future__ import annotations

import base64
import subprocess
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import hvac
import redis

from worker.devstack.postgres import postgres_bin


def uid() -> str:
    return uuid.uuid4().hex[:8]


def root_client(vault: Any) -> hvac.Client:
    return hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)


def write_secret(vault: Any, path: str, values: dict[str, Any], mount: str = "secret") -> None:
    root_client(vault).secrets.kv.v2.create_or_update_secret(path=path, secret=values, mount_point=mount)


def make_approle(vault: Any, role: str, *, policies: list[str], token_ttl: str = "1h",
                 token_max_ttl: str = "1h", wrapped: bool = False) -> tuple[str, str]:
    """An AppRole login (role_id, secret_id); with `wrapped`, the secret id is a response-wrapping token."""
    client = root_client(vault)
    client.auth.approle.create_or_update_approle(role, token_policies=policies, token_ttl=token_ttl,
                                                 token_max_ttl=token_max_ttl)
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    if wrapped:
        resp = client.adapter.post(f"/v1/auth/approle/role/{role}/secret-id", headers={"X-Vault-Wrap-TTL": "120s"})
        return role_id, resp["wrap_info"]["token"]
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    return role_id, secret_id


def forms(canary: str) -> dict[str, str]:
    """The forms a leak could take: raw, base64 (at each byte alignment, as inside basic auth), URL-encoded."""
    raw = canary.encode()
    found = {"raw": canary, "url": urllib.parse.quote(canary, safe=""), "url_plus": urllib.parse.quote_plus(canary)}
    for name, encode in (("base64", base64.b64encode), ("urlsafe_base64", base64.urlsafe_b64encode)):
        for k in range(3):
            data = b"\0" * k + raw
            # the part of the encoding that does not depend on the bytes around the canary
            found[f"{name}@{k}"] = encode(data).decode()[4 if k else 0:(len(data) // 3) * 4]
    return found


def dump_database(database_url: str) -> str:
    """Everything in the test database, as pg_dump prints it (data and schema)."""
    out = subprocess.run([str(postgres_bin("pg_dump")), "--no-owner", "--inserts", "-d", database_url],
                         capture_output=True, timeout=60, check=True)
    return out.stdout.decode("utf-8", errors="replace")


def dump_redis(url: str, prefix: str) -> str:
    """Every key under `prefix`: stream entries, hashes, strings, lists, sets, as text."""
    parts: list[str] = []
    with redis.Redis.from_url(url, socket_timeout=10) as client:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            kind = client.type(key).decode()
            parts.append(f"KEY {key!r} {kind}")
            if kind == "stream":
                for entry_id, fields in client.xrange(key):
                    parts.append(f"{entry_id!r} {fields!r}")
            elif kind == "hash":
                parts.append(repr(client.hgetall(key)))
            elif kind == "string":
                parts.append(repr(client.get(key)))
            elif kind == "list":
                parts.append(repr(client.lrange(key, 0, -1)))
            elif kind in ("set", "zset"):
                parts.append(repr(client.smembers(key) if kind == "set" else client.zrange(key, 0, -1)))
    return "\n".join(parts)


def leaks(canary: str, text: str) -> list[str]:
    """Names of the forms of `canary` found in `text`."""
    return [name for name, form in forms(canary).items() if form in text]


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
