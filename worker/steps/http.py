"""The `http` step: one HTTP call with a stable Idempotency-Key, the egress policy on every hop, a size cap.

Redirects are followed by hand (each hop is checked); when one leaves the origin, the credentials meant for
the first host are dropped: Authorization, Cookie, the usual API-key headers, and any header whose value
holds one of the step's secrets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import httpx
import orjson
from opentelemetry.trace import StatusCode

from worker.config import Settings
from worker.definitions.step_args import HttpArgs
from worker.egress.policy import EgressPolicy
from worker.errors import StepFailed
from worker.steps.base import StepContext
from worker.steps.http_wire import (
    DEFAULT_TIMEOUT,
    EXCERPT_BYTES,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    USER_AGENT,
    _caused_by,
    _decode_body,
    _error_type,
    _has_header,
    _is_expected,
    _log_failure,
    _origin,
    _origin_free,
    _param,
    _safe_url,
    _span_attributes,
    _status_failure,
    parse_retry_after,
    validate_args,
)
from worker.telemetry.child import achild_span, span_traceparent

logger = logging.getLogger(__name__)

__all__ = ["USER_AGENT", "HttpExecutor", "parse_retry_after", "validate_args"]  # what other modules import


class HttpExecutor:
    """Runs `uses: http` steps through one pooled `httpx.AsyncClient`."""

    kind: ClassVar[str] = "http"

    def __init__(self, settings: Settings) -> None:
        self.policy = EgressPolicy.from_settings(settings)
        # trust_env=False: no proxy variables or ~/.netrc credentials leak into user-chosen URLs.
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            timeout=DEFAULT_TIMEOUT,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        spec = validate_args(HttpArgs, args, "http")
        if spec.json_ is not None and spec.body is not None:
            raise StepFailed(
                "invalid http step arguments: set either json or body, not both", retryable=False
            )
        timeout = spec.timeout if spec.timeout is not None else ctx.timeout
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout

        headers = dict(spec.headers)
        if not _has_header(headers, "idempotency-key"):
            headers["Idempotency-Key"] = ctx.key_for(0)
        method: str = spec.method
        content: bytes | None = None
        if spec.json_ is not None:
            try:
                content = orjson.dumps(spec.json_)
            except orjson.JSONEncodeError as exc:
                raise StepFailed(f"invalid http step arguments: json: {exc}", retryable=False) from exc
            if not _has_header(headers, "content-type"):
                headers["Content-Type"] = "application/json"
        elif spec.body is not None:
            content = spec.body.encode()

        try:
            url = httpx.URL(spec.url)
        except httpx.InvalidURL as exc:
            await self.policy.check(spec.url)  # names an internal target, else "invalid URL"
            raise StepFailed(f"invalid URL: {exc}", retryable=False) from exc
        params: dict[str, Any] | None = {k: _param(v) for k, v in spec.params.items()} or None
        redirects = 0
        while True:
            try:
                request = self._client.build_request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    content=content,
                    timeout=httpx.Timeout(timeout),
                )
            except (httpx.InvalidURL, UnicodeEncodeError, TypeError) as exc:
                raise StepFailed(f"invalid http request: {exc}", retryable=False) from exc
            response, body = await self._send(
                request,
                spec.max_response_bytes,
                timeout,
                ctx,
                follow_redirects=spec.follow_redirects,
                expect_status=spec.expect_status,
            )
            if body is not None:
                return self._finish(request, response, body, spec.expect_status)
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise StepFailed(
                    f"too many redirects (more than {MAX_REDIRECTS}) starting at "
                    f"{_safe_url(httpx.URL(spec.url))}",
                    retryable=False,
                )
            try:
                url = request.url.join(response.headers["location"])
            except httpx.InvalidURL as exc:
                raise StepFailed(
                    f"invalid redirect location from {_safe_url(request.url)}: {exc}", retryable=False
                ) from exc
            params = None  # already part of the first URL; a redirect target carries its own query
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                # what browsers and httpx do: the follow-up is a GET (HEAD stays HEAD) without the body
                method = "HEAD" if method == "HEAD" else "GET"
                content = None
                headers = {
                    k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")
                }
            if _origin(url) != _origin(request.url):
                headers = _origin_free(headers, ctx.secrets)

    async def _send(
        self,
        request: httpx.Request,
        cap: int,
        seconds: float,
        ctx: StepContext,
        *,
        follow_redirects: bool,
        expect_status: list[int] | None,
    ) -> tuple[httpx.Response, bytes | None]:
        """Check the URL and send one request. The body is None when the response is a redirect to follow.

        The body of an unexpected status is only read far enough for an error excerpt, so that a large
        error page still gives the status' own retry decision rather than "response too large".
        """
        url = request.url
        where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        async with achild_span(ctx.traceparent, request.method, _span_attributes(request), kind="client",
                               record_exception=False) as span:
            if "traceparent" not in request.headers:
                parent = span_traceparent(span) or ctx.traceparent
                if parent:
                    request.headers["traceparent"] = parent
            try:
                response, body = await self._send_traced(request, cap, seconds, ctx, where,
                                                         follow_redirects=follow_redirects,
                                                         expect_status=expect_status)
            except StepFailed as failure:
                if span.is_recording():
                    span.set_attribute("error.type", _error_type(failure))
                    span.set_status(StatusCode.ERROR, failure.reason[:200])
                raise
            if span.is_recording():
                span.set_attribute("http.response.status_code", response.status_code)
                if body is not None:
                    span.set_attribute("http.response.body.size", len(body))
                if response.status_code >= 400:
                    span.set_attribute("error.type", str(response.status_code))
                    span.set_status(StatusCode.ERROR)
            return response, body

    async def _send_traced(
        self,
        request: httpx.Request,
        cap: int,
        seconds: float,
        ctx: StepContext,
        where: str,
        *,
        follow_redirects: bool,
        expect_status: list[int] | None,
    ) -> tuple[httpx.Response, bytes | None]:
        url = request.url
        started = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                await self.policy.check(str(url))
                response = await self._client.send(request, stream=True)
                try:
                    follow = (
                        follow_redirects
                        and response.status_code in REDIRECT_STATUSES
                        and "location" in response.headers
                    )
                    if follow:
                        body = None
                    elif _is_expected(response.status_code, expect_status):
                        body = await self._read_capped(response, cap)
                    else:
                        body = await self._read_capped(response, min(cap, EXCERPT_BYTES), truncate=True)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException) as exc:
            failure = StepFailed(
                f"timed out after {seconds:g}s ({request.method} {_safe_url(url)})", retryable=True
            )
            _log_failure(ctx, request, started, failure)
            raise failure from exc
        except httpx.ConnectError as exc:
            if _caused_by(exc, ConnectionRefusedError):
                reason = f"connection refused to {where}"
            else:
                reason = f"could not connect to {where}: {exc or type(exc).__name__}"
            failure = StepFailed(reason, retryable=True)
            _log_failure(ctx, request, started, failure)
            raise failure from exc
        except httpx.TransportError as exc:
            failure = StepFailed(f"connection to {where} failed: {type(exc).__name__}: {exc}", retryable=True)
            _log_failure(ctx, request, started, failure)
            raise failure from exc
        except StepFailed as failure:
            _log_failure(ctx, request, started, failure)
            raise
        ctx.logger.debug(
            "http %s %s -> %d in %.0fms",
            request.method,
            _safe_url(url),
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response, body

    async def _read_capped(self, response: httpx.Response, cap: int, *, truncate: bool = False) -> bytes:
        """The body, streamed; more than `cap` bytes is a failure (or, with `truncate`, cut off)."""
        declared = response.headers.get("content-length", "")
        if not truncate and declared.isdigit() and int(declared) > cap:
            raise StepFailed(
                f"response too large: Content-Length {declared} exceeds max_response_bytes {cap}",
                retryable=False,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap and truncate:
                chunks.append(chunk[: cap - (size - len(chunk))])
                break
            if size > cap:
                raise StepFailed(
                    f"response too large: more than max_response_bytes {cap} bytes", retryable=False
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _finish(
        self, request: httpx.Request, response: httpx.Response, body: bytes, expect_status: list[int] | None
    ) -> dict[str, Any]:
        if not _is_expected(response.status_code, expect_status):
            raise _status_failure(request, response, body)
        status = response.status_code
        parsed, text = _decode_body(response, body)
        return {
            "status": status,
            "headers": {k.lower(): v for k, v in response.headers.items() if k.lower() != "set-cookie"},
            "json": parsed,
            "text": text,
            "url": str(response.url),
        }
