"""`POST /hooks/{path}`: a signed request starts a run of the workflow with `on: {webhook: {path, secret}}`.

No bearer token: the signature is the authentication. `X-Signature: sha256=<hex>` (GitHub's
`X-Hub-Signature-256` is read too) is the HMAC-SHA256 of the raw body under the `secret` key of the
workflow's credential (worker.client.webhooks reads it from Vault with the workflow's own policy). The
checks, in order; each refusal is a JSON error, starts nothing and leaves an audit entry
(`webhook.refused`):

    the path belongs to one active workflow                    404 (409: two workflows claim it)
    a signature header of the form sha256=<64 hex digits>      401
    the secret is readable                                     503 + Retry-After (the reason: audit and log only)
    HMAC-SHA256(secret, body) equals it (hmac.compare_digest)  401
    the body makes inputs that fit the workflow's `inputs:`    400 / 415 / 422 (409: delivery id reused)

then `202 {"run_id", "workflow", "created": true}`. The body is bounded like every body (BodyLimit: 413).

The body becomes the run's inputs (`webhook_inputs`): a JSON object is the inputs, as for `POST /v1/runs`
(validated against `inputs:`); any other JSON value is `{"body": value}`; a body that is not JSON (its
Content-Type says text, a form...) is `{"body": "<the text>"}`, and one that is not UTF-8 text is a 415.
Headers are not inputs. `Idempotency-Key` or `X-Delivery-Id` (or GitHub's `X-GitHub-Delivery`) names the
delivery: a sender's retry with it gets the run the first one started (200, `"created": false`).

The audit trail's appends are serialised, so an unauthenticated flood must not become a flood of entries:
`RefusalAudit` writes at most BURST entries per path per WINDOW seconds per API process (unknown paths
share one allowance), logs and counts the rest, and the next entry written for the path carries the count.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Request, Response
from pydantic import BaseModel, Field

from worker.api.errors import ApiError
from worker.client import RuntimeClient
from worker.client.base import check_idempotency_key
from worker.client.webhooks import WebhookSecretUnavailable, WebhookTarget
from worker.errors import ConfigError, Conflict, NotFound, StoreError, WorkerError

logger = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("x-signature", "x-hub-signature-256")
DELIVERY_HEADERS = ("idempotency-key", "x-delivery-id", "x-github-delivery")
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
BURST = 20
WINDOW = 60.0
RETRY_AFTER = "5"


class WebhookAccepted(BaseModel):
    run_id: str
    workflow: str
    created: bool = Field(description="false: the delivery id was seen before; this is the run it started")


def _shown(text: str | None, limit: int = 100) -> str | None:
    """Header or path text for the audit trail: printable (Postgres text holds no NUL), bounded."""
    if text is None:
        return None
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _header(request: Request, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value is not None:
            return value
    return None


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def webhook_inputs(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The run's inputs from a verified body (see the module docstring); ApiError 400/415 if it has none."""
    if _is_json(content_type):
        if not body.strip():
            return {}
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc}); send JSON, or another Content-Type for "
                                "text (it becomes inputs.body)") from None
        return value if isinstance(value, dict) else {"body": value}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(415, "the body is neither JSON nor UTF-8 text") from None
    if "\x00" in text:
        raise ApiError(415, "the body is text with a NUL character")
    return {"body": text}


class RefusalAudit:
    """Audit entries of refused deliveries, bounded per path (see the module docstring)."""

    def __init__(self, burst: int = BURST, window: float = WINDOW) -> None:
        self.burst = burst
        self.window = window
        self._spent: dict[str, tuple[float, int, int]] = {}  # path -> (window start, written, not written)

    def _allow(self, key: str) -> tuple[bool, int]:
        """(write this one?, refusals not written since the last entry)."""
        now = time.monotonic()
        start, written, held = self._spent.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, written = now, 0
        if written >= self.burst:
            if held == 0:
                logger.warning("webhook %s: more than %d refused deliveries in %.0f s; auditing the count only",
                               key, self.burst, self.window)
            self._spent[key] = (start, written, held + 1)
            return False, held + 1
        if len(self._spent) > 10_000:  # keys are known paths and one for unknown ones; stay bounded anyway
            self._spent.clear()
        self._spent[key] = (start, written + 1, 0)
        return True, held

    async def record(self, client: RuntimeClient, path: str, reason: str, *, known: bool,
                     workflow: str | None, origin: str, seen: dict[str, Any]) -> None:
        key = path if known else "?"
        write, held = self._allow(key)
        logger.debug("webhook %s refused from %s: %s", _shown(path), origin, reason)
        if not write:
            return
        if held:
            seen = {**seen, "refusals_not_audited_before": held}
        try:
            await client.audit_webhook_refusal(path if known else "?", reason, workflow=workflow, origin=origin,
                                               seen=seen)
        except Exception as exc:  # noqa: BLE001 - the refusal stands without its entry; say so in the log
            logger.warning("could not audit a refused webhook delivery (%s: %s)", type(exc).__name__, exc)


def install(app: FastAPI) -> None:
    refusals = RefusalAudit()

    @app.post("/hooks/{path}", status_code=202, response_model=WebhookAccepted, tags=["webhooks"],
              responses={200: {"model": WebhookAccepted, "description": "the delivery id was seen before"},
                         400: {"description": "a JSON Content-Type with a body that is not JSON"},
                         401: {"description": "no signature, a malformed or a wrong one"},
                         404: {"description": "no workflow receives this path"},
                         409: {"description": "two workflows claim the path, or the delivery id was used "
                                              "with another body"},
                         415: {"description": "the body is neither JSON nor UTF-8 text"},
                         422: {"description": "the inputs do not fit the workflow's `inputs:`"},
                         503: {"description": "the webhook's secret cannot be read now (Retry-After)"}},
              openapi_extra={"requestBody": {"required": False, "content": {
                  "application/json": {"schema": {"description": "an object: the run's inputs; another "
                                                                 "JSON value: inputs.body"}},
                  "text/plain": {"schema": {"type": "string", "description": "inputs.body"}}}}})
    async def webhook(path: str, request: Request, response: Response,
                      x_signature: Annotated[str | None, Header(description="sha256=<hex HMAC-SHA256 of the "
                                                                            "body>")] = None,
                      idempotency_key: Annotated[str | None, Header(description="the delivery's id: a retry "
                                                                                "returns the first run")] = None,
                      x_delivery_id: Annotated[str | None, Header(description="the same, by another name")] = None,
                      ) -> WebhookAccepted:
        """Start a run of the workflow with `on: {webhook: {path: PATH, secret: ...}}`, if the body is signed
        with its secret. No bearer token: the signature authenticates the sender."""
        del x_signature, idempotency_key, x_delivery_id  # declared for the OpenAPI document; read with aliases
        client: RuntimeClient = request.app.state.client
        origin = request.client.host if request.client is not None else "unknown"
        signature = _header(request, SIGNATURE_HEADERS)
        delivery_id = _header(request, DELIVERY_HEADERS)
        seen: dict[str, Any] = {"path": _shown(path), "signed": signature is not None,
                                "delivery_id": _shown(delivery_id), "bytes": None,
                                "user_agent": _shown(request.headers.get("user-agent"), 200)}
        target: WebhookTarget | None = None

        async def refuse(status: int, reason: str, message: str | None = None,
                         headers: dict[str, str] | None = None, *, known: bool = True) -> ApiError:
            await refusals.record(client, path, reason, known=known, origin=origin, seen=seen,
                                  workflow=target.workflow if target else None)
            return ApiError(status, message or reason, headers)

        try:
            target = await client.webhook_target(path)
        except Conflict as exc:  # a path of active workflows, so audited under its name
            raise await refuse(409, str(exc)) from None
        if target is None:
            raise await refuse(404, f"no webhook at /hooks/{_shown(path)}", known=False)
        match = _SIGNATURE.match(signature.strip()) if signature is not None else None
        if signature is None:
            raise await refuse(401, "missing signature: send X-Signature: sha256=<hex HMAC-SHA256 of the body "
                                    "under the webhook's secret>")
        if match is None:
            raise await refuse(401, "malformed signature: X-Signature must be sha256=<64 hex digits>")
        try:
            secret = await client.webhook_secret(target)
        except WebhookSecretUnavailable as exc:
            raise await refuse(503, f"secret unavailable: {exc}", "the webhook cannot verify signatures right "
                                                                  "now; try again later",
                               {"Retry-After": RETRY_AFTER}) from None
        body = await request.body()  # bounded by BodyLimit
        seen["bytes"] = len(body)
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, bytes.fromhex(match.group(1))):
            raise await refuse(401, "wrong signature: it does not match the body under the webhook's secret")
        try:
            check_idempotency_key(delivery_id)
            inputs = webhook_inputs(body, request.headers.get("content-type"))
            run_id, created = await client.start_from_webhook(target, inputs, delivery_id=delivery_id,
                                                              origin=origin)
        except ApiError as exc:
            raise await refuse(exc.status, exc.message) from None
        except Conflict as exc:
            raise await refuse(409, str(exc)) from None
        except (StoreError, NotFound, ConfigError):
            raise  # not the sender's doing: the usual answer (503, 404, 500)
        except WorkerError as exc:  # inputs that do not fit, a delivery id that is not one
            raise await refuse(422, str(exc)) from None
        response.status_code = 202 if created else 200
        return WebhookAccepted(run_id=run_id, workflow=target.workflow, created=created)
