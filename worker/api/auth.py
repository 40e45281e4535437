"""Bearer tokens: who is calling, and may they do this.

`Authorization: Bearer agentrt_...`. A token is looked up by its SHA-256 (the only thing stored), and the
answer is kept for `CACHE_SECONDS` so that a busy API does not read Postgres on every request: a
revocation takes effect within that time. The caller acts as `api:NAME`, with the client's address as
its origin in the audit trail.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from worker.api.errors import ApiError
from worker.client import RuntimeClient
from worker.client.access import ApiToken, token_hash
from worker.identity import Identity

CACHE_SECONDS = 2.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="agentrt"'}


@dataclass(frozen=True, slots=True)
class Caller:
    token: ApiToken
    client: RuntimeClient  # the runtime client acting as this caller

    @property
    def principal(self) -> str:
        return self.token.principal


class TokenCache:
    """Token hash -> (record or None, when it was read)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ApiToken | None, float]] = {}

    async def lookup(self, client: RuntimeClient, token: str) -> ApiToken | None:
        key = token_hash(token)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[1] < CACHE_SECONDS:
            return hit[0]
        record = await client.check_api_token(token)
        if len(self._entries) > 10_000:  # unknown tokens sprayed at us must not grow this without bound
            self._entries.clear()
        self._entries[key] = (record, now)
        return record


async def authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token: send `Authorization: Bearer <token>` (an operator creates one "
                            "with `agentrt api-token create NAME --scope ...`)", _CHALLENGE)
    client: RuntimeClient = request.app.state.client
    record = await request.app.state.tokens.lookup(client, token.strip())
    if record is None:
        raise ApiError(401, "unknown API token", _CHALLENGE)
    state = record.state()
    if state != "active":
        raise ApiError(401, f"API token {record.name!r} is {state}", _CHALLENGE)
    host = request.client.host if request.client is not None else "unknown"
    identity = Identity(user=record.principal, via=f"api {host}")
    return Caller(record, client.acting_as(identity))


def require(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the caller, whose token must carry `scope`."""

    async def dependency(request: Request) -> Caller:
        caller = await authenticate(request)
        if scope not in caller.token.scopes:
            raise ApiError(403, f"API token {caller.token.name!r} lacks the scope {scope!r} "
                                f"(it has: {', '.join(caller.token.scopes)})")
        return caller

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
