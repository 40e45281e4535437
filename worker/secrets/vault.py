"""The worker's Vault session: authentication, renewal, step tokens and KV v2 reads.

hvac is synchronous: every method here blocks and is called from the event loop with
`asyncio.to_thread` (see provider.py). hvac and requests errors are wrapped at this boundary into
`VaultUnavailable` (retry later), `VaultDenied` and `VaultMissing` (final). Secret values are never
logged.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import hvac
import hvac.exceptions
import requests

from worker.errors import WorkerError

logger = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class VaultError(WorkerError):
    """Base of the Vault errors below."""


class VaultUnavailable(VaultError):
    """Vault cannot be reached, is sealed or answers 5xx: try again later."""


class VaultDenied(VaultError):
    """Vault refused (403): the token's policies do not allow it."""


class VaultMissing(VaultError):
    """Nothing is stored at the path (404)."""


class VaultAuthFailed(VaultError):
    """The worker could not log in (bad AppRole credentials, an already-used wrapped secret id...)."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    # hvac appends the request URL ("on <url>"); keep the first reason only
    text = text.split(", on ")[0]
    return (text or type(exc).__name__)[:200]


def wrap_errors(exc: BaseException, addr: str) -> VaultError | None:
    """The VaultError for a hvac/requests exception, or None if it is none of those."""
    if isinstance(exc, requests.RequestException):
        return VaultUnavailable(f"Vault unreachable at {addr} ({type(exc).__name__})")
    if isinstance(exc, hvac.exceptions.VaultDown | hvac.exceptions.InternalServerError
                  | hvac.exceptions.BadGateway | hvac.exceptions.RateLimitExceeded
                  | hvac.exceptions.VaultNotInitialized):
        return VaultUnavailable(f"Vault unreachable at {addr} ({type(exc).__name__}: {_short(exc)})")
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return VaultDenied(_short(exc) or "permission denied")
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return VaultMissing(_short(exc) or "no such path")
    if isinstance(exc, hvac.exceptions.VaultError):
        return VaultDenied(f"{type(exc).__name__}: {_short(exc)}")
    return None


@dataclass(slots=True)
class _Token:
    value: str
    obtained: float  # time.monotonic()
    ttl: float  # seconds; 0: does not expire
    renewable: bool
    generation: int


class VaultSession:
    """Holds the worker's token (VAULT_TOKEN or AppRole), renews it and logs in again when it expires.

    Thread-safe: `asyncio.to_thread` calls may overlap.
    """

    def __init__(self, addr: str, *, token: str | None = None, role_id: str | None = None,
                 secret_id: str | None = None, approle_mount: str = "approle", token_role: str | None = None,
                 step_token_ttl: float = 120.0, timeout: float = 5.0) -> None:
        if not token and not (role_id and secret_id):
            raise VaultAuthFailed("set VAULT_TOKEN, or AGENTRT_VAULT_ROLE_ID and AGENTRT_VAULT_SECRET_ID")
        self.addr = addr.rstrip("/")
        self.timeout = timeout
        self.approle_mount = approle_mount
        self.token_role = token_role
        self.step_token_ttl = max(10.0, step_token_ttl)
        self._static_token = token if not (role_id and secret_id) else None
        self._role_id = role_id
        self._secret_id = secret_id
        self._secret_id_unwrapped = secret_id is not None and bool(_UUID.match(secret_id))
        self._lock = threading.RLock()
        self._token: _Token | None = None
        self._generation = 0
        self._children: dict[tuple[str, ...], _Token] = {}
        self._no_role = False

    # -- plumbing ----------------------------------------------------------------------------
    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, timeout=self.timeout)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            wrapped = wrap_errors(exc, self.addr)
            if wrapped is None:
                raise
            raise wrapped from None  # the cause may quote request details; keep tracebacks short

    @property
    def uses_approle(self) -> bool:
        return self._static_token is None

    # -- the worker's token ------------------------------------------------------------------
    def _login(self) -> _Token:
        assert self._role_id is not None and self._secret_id is not None
        client = self.client()
        if not self._secret_id_unwrapped:
            # a response-wrapped secret id: unwrap it once (wrapping tokens are single-use), authenticating
            # with the wrapping token itself
            try:
                resp = self._call(self.client(self._secret_id).sys.unwrap)
            except VaultDenied as exc:
                raise VaultAuthFailed(f"cannot unwrap AGENTRT_VAULT_SECRET_ID (used already or expired?): "
                                      f"{exc}") from None
            self._secret_id = str(resp["data"]["secret_id"])
            self._secret_id_unwrapped = True
        try:
            resp = self._call(client.auth.approle.login, role_id=self._role_id, secret_id=self._secret_id,
                              use_token=False, mount_point=self.approle_mount)
        except (VaultDenied, VaultMissing) as exc:
            raise VaultAuthFailed(f"AppRole login at {self.addr} failed: {exc}") from None
        auth = resp["auth"]
        self._generation += 1
        self._children.clear()
        logger.info("logged in to Vault at %s with AppRole (token ttl %ss)", self.addr, auth.get("lease_duration"))
        return _Token(str(auth["client_token"]), time.monotonic(), float(auth.get("lease_duration") or 0),
                      bool(auth.get("renewable")), self._generation)

    def _adopt_static(self) -> _Token:
        assert self._static_token is not None
        info = self._call(self.client(self._static_token).auth.token.lookup_self)["data"]
        self._generation += 1
        self._children.clear()
        return _Token(self._static_token, time.monotonic(), float(info.get("ttl") or 0),
                      bool(info.get("renewable")), self._generation)

    def _fresh(self) -> _Token:
        return self._login() if self.uses_approle else self._adopt_static()

    def _refresh_due(self, tok: _Token, now: float) -> bool:
        return tok.ttl > 0 and now - tok.obtained >= tok.ttl * 2 / 3

    def worker_token(self, *, force_login: bool = False) -> _Token:
        """The worker's token, renewed or replaced when two thirds of its TTL have passed."""
        with self._lock:
            tok = self._token
            now = time.monotonic()
            if tok is None or force_login:
                self._token = self._fresh()
                return self._token
            if not self._refresh_due(tok, now):
                return tok
            if tok.renewable:
                try:
                    resp = self._call(self.client(tok.value).auth.token.renew_self)
                    ttl = float(resp["auth"].get("lease_duration") or 0)
                    remaining = tok.ttl - (now - tok.obtained)
                    if ttl > remaining + 1 or not self.uses_approle:
                        tok.obtained, tok.ttl = now, ttl
                        logger.debug("renewed the worker's Vault token (ttl %ss)", ttl)
                        return tok
                except VaultDenied:
                    logger.info("the worker's Vault token could not be renewed")
            if self.uses_approle:
                self._token = self._login()
                return self._token
            return tok  # a static token we cannot renew: use it while it lasts

    def renew_if_due(self) -> float:
        """Called by the background renewer: refresh the token if due; returns seconds until next check."""
        tok = self.worker_token()
        if tok.ttl <= 0:
            return 300.0
        return max(0.5, min(300.0, tok.ttl / 3))

    # -- step tokens -------------------------------------------------------------------------
    def step_token(self, policies: tuple[str, ...], *, fresh: bool = False) -> str:
        """A short-lived child of the worker's token carrying only `policies` (cached briefly)."""
        with self._lock:
            now = time.monotonic()
            cached = self._children.get(policies)
            tok = self.worker_token()
            if (not fresh and cached is not None and cached.generation == tok.generation
                    and now - cached.obtained < cached.ttl / 2):
                return cached.value
            for attempt in (1, 2):
                try:
                    child = self._create_child(tok, policies)
                    break
                except VaultDenied:
                    if attempt == 2 or not self.uses_approle:
                        raise
                    tok = self.worker_token(force_login=True)  # revoked or expired early: log in again
            self._children[policies] = child
            return child.value

    def _create_child(self, tok: _Token, policies: tuple[str, ...]) -> _Token:
        ttl = int(self.step_token_ttl)
        client = self.client(tok.value)
        kwargs: dict[str, Any] = {"policies": list(policies), "ttl": f"{ttl}s", "no_parent": False,
                                  "renewable": False, "display_name": "agentrt-step"}
        resp = None
        if self.token_role and not self._no_role:
            try:
                resp = client.auth.token.create(role_name=self.token_role, **kwargs)
            except hvac.exceptions.InvalidRequest as exc:
                if "unknown role" not in str(exc):  # Vault tells this 400 apart from others only in text
                    raise VaultDenied(f"InvalidRequest: {_short(exc)}") from None
                # not set up (`agentrt vault policies --apply` creates it): a plain child token works
                # too when the worker's own token holds the workflow policies (or is a dev root token)
                logger.warning("Vault token role %r does not exist; creating plain child tokens", self.token_role)
                self._no_role = True
            except Exception as exc:
                wrapped = wrap_errors(exc, self.addr)
                if wrapped is None:
                    raise
                raise wrapped from None
        if resp is None:
            resp = self._call(client.auth.token.create, **kwargs)
        return _Token(str(resp["auth"]["client_token"]), time.monotonic(), float(ttl), False, tok.generation)

    def forget_step_token(self, policies: tuple[str, ...]) -> None:
        with self._lock:
            self._children.pop(policies, None)

    # -- reads -------------------------------------------------------------------------------
    def read_kv(self, token: str, mount: str, path: str) -> dict[str, Any]:
        """The data of the latest version of a KV v2 secret."""
        resp = self._call(self.client(token).secrets.kv.v2.read_secret_version, path=path, mount_point=mount,
                          raise_on_deleted_version=True)
        data = (resp.get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise VaultMissing(f"{mount}/data/{path} holds no data")
        return data
