"""RuntimeClient, part access: the HTTP API's bearer tokens, and acting as one of its callers.

A token is `agentrt_` + 43 random URL-safe characters (256 bits). Only its SHA-256 is stored: a
token is shown once, when it is created, and cannot be read back. Scopes say what a token may do;
the policy file (`AGENTRT_POLICY_FILE`) still says which workflows its principal (`api:NAME`) may
view, approve or cancel, as for any person.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

import asyncpg

from worker.client.base import ClientBase
from worker.errors import Conflict, NotFound, WorkerError
from worker.identity import Identity
from worker.oversight import audit

SCOPES = ("runs:read", "runs:write", "approvals:decide", "events:write")
"""What a token may do: read runs and approvals, start and cancel runs, decide approvals, send events."""

TOKEN_PREFIX = "agentrt_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def principal(name: str) -> str:
    """The user an API token acts as (policy files and the audit trail name it so)."""
    return f"api:{name}"


@dataclass(frozen=True, slots=True)
class ApiToken:
    token_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def principal(self) -> str:
        return principal(self.name)

    def state(self, now: datetime | None = None) -> str:
        """active | expired | revoked"""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(tz=UTC)):
            return "expired"
        return "active"


def _token(r: asyncpg.Record) -> ApiToken:
    return ApiToken(str(r["token_id"]), r["name"], tuple(r["scopes"]), r["created_at"], r["created_by"],
                    r["expires_at"], r["revoked_at"])


_TOKEN_COLS = "token_id, name, scopes, created_at, created_by, expires_at, revoked_at"


class AccessApi(ClientBase):
    """API tokens: create (the token is returned once), list, revoke, check; acting as a token's principal."""

    def acting_as(self, identity: Identity) -> Self:
        """This client (same connections) acting as `identity`: what the API server does per request."""
        other = copy.copy(self)
        other.identity = identity
        return other

    async def create_api_token(self, name: str, scopes: list[str], *,
                               expires_in: timedelta | None = None) -> tuple[str, ApiToken]:
        """A new token named `name` with `scopes`; (the token, its record). Conflict if an active token has the
        name (revoke it first)."""
        name = name.strip()
        if not name or len(name) > 100 or any(c.isspace() or not c.isprintable() for c in name):
            raise WorkerError("a token name is 1-100 printable characters without spaces")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise WorkerError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}; scopes are "
                              f"{', '.join(SCOPES)}")
        if expires_in is not None and expires_in.total_seconds() <= 0:
            raise WorkerError("expires_in must be positive")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = datetime.now(tz=UTC) + expires_in if expires_in is not None else None
        try:
            row = await self.pool.fetchrow(
                f"""INSERT INTO api_tokens (token_id, name, token_hash, scopes, created_by, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_TOKEN_COLS}""",
                uuid.uuid4(), name, token_hash(token), sorted(set(scopes)), str(self.identity), expires)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"an active API token is already named {name!r}: revoke it first "
                           f"(`agentrt api-token revoke {name}`)") from exc
        assert row is not None
        await audit.append(self.pool, self.identity, "api-token.create", outcome="ok",
                           reason=f"token {name} scopes {','.join(sorted(set(scopes)))}")
        return token, _token(row)

    async def list_api_tokens(self, *, include_revoked: bool = False) -> list[ApiToken]:
        rows = await self.pool.fetch(
            f"""SELECT {_TOKEN_COLS} FROM api_tokens WHERE $1 OR revoked_at IS NULL ORDER BY name, created_at""",
            include_revoked)
        return [_token(r) for r in rows]

    async def revoke_api_token(self, name: str) -> ApiToken:
        row = await self.pool.fetchrow(
            f"""UPDATE api_tokens SET revoked_at = now(), revoked_by = $2
                WHERE name = $1 AND revoked_at IS NULL RETURNING {_TOKEN_COLS}""", name, str(self.identity))
        if row is None:
            raise NotFound(f"no active API token named {name!r}")
        await audit.append(self.pool, self.identity, "api-token.revoke", outcome="ok", reason=f"token {name}")
        return _token(row)

    async def check_api_token(self, token: str) -> ApiToken | None:
        """The token's record (whatever its state: the caller says why it is refused), or None if unknown."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        row = await self.pool.fetchrow(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE token_hash = $1",
                                       token_hash(token))
        return None if row is None else _token(row)
