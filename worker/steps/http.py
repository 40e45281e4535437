"""The `http` step: one HTTP call with a stable Idempotency-Key, the egress policy on every hop, a size cap.

Redirects are followed by hand (each hop is checked); when one leaves the origin, the credentials meant for
the first host are dropped: Authorization, Cookie, the usual API-key headers, and any header whose value
holds one of the step's secrets.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any, ClassVar, TypeVar

import httpx
import orjson
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ValidationError

from worker.config import Settings
from worker.definitions.schema import HttpArgs
from worker.egress.policy import EgressPolicy
from worker.errors import StepFailed
from worker.steps.base import StepContext
from worker.telemetry.child import achild_span, span_traceparent

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
TEXT_LIMIT = 64 * 1024
EXCERPT_BYTES = 4096  # read of an unexpected response's body
EXCERPT_CHARS = 200  # of it quoted in the failure reason
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUSES = frozenset({408, 429})
# Dropped when a redirect leaves the origin, so credentials meant for one host never reach another.
_ORIGIN_BOUND_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key",
                                   "x-auth-token", "x-goog-api-key"})


def _version() -> str:
    try:
        return metadata.version("agentruntime")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


USER_AGENT = f"agentruntime/{_version()}"


M = TypeVar("M", bound=BaseModel)


def validate_args(model: type[M], args: dict[str, Any], kind: str) -> M:
    """`model.model_validate(args)`, with a validation error turned into a readable non-retryable failure."""
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}" for err in exc.errors()
        )
        raise StepFailed(f"invalid {kind} step arguments: {problems}", retryable=False) from exc


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT by definition
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _safe_url(url: httpx.URL) -> str:
    """The URL for logs and error messages: no userinfo, query or fragment (they may hold secrets)."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


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


def _span_attributes(request: httpx.Request) -> dict[str, Any]:
    """HTTP client semantic conventions; the URL without userinfo, query or fragment (secrets)."""
    url = request.url
    return {
        "http.request.method": request.method,
        "url.full": _safe_url(url),
        "url.scheme": url.scheme,
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "user_agent.original": USER_AGENT,
    }


def _error_type(failure: StepFailed) -> str:
    cause = failure.__cause__
    if cause is not None:
        return type(cause).__qualname__
    return "timeout" if failure.reason.startswith("timed out") else "StepFailed"


def _is_expected(status: int, expect_status: list[int] | None) -> bool:
    return status in expect_status if expect_status is not None else 200 <= status < 300


def _log_failure(ctx: StepContext, request: httpx.Request, started: float, failure: StepFailed) -> None:
    ctx.logger.debug(
        "http %s %s failed in %.0fms: %s",
        request.method,
        _safe_url(request.url),
        (time.monotonic() - started) * 1000,
        failure.reason,
    )


def _origin_free(headers: dict[str, str], secrets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The headers without those bound to the first origin: credentials by name, and any carrying a secret."""
    values = [str(v) for found in secrets.values() for v in found.values() if len(str(v)) >= 4]
    return {k: v for k, v in headers.items()
            if k.lower() not in _ORIGIN_BOUND_HEADERS and not any(secret in v for secret in values)}


def _has_header(headers: dict[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)


def _param(value: Any) -> Any:
    """Query values: scalars and lists as httpx sends them, anything else as compact JSON."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return value
    return orjson.dumps(value).decode()


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        if isinstance(current, BaseExceptionGroup):  # anyio's happy-eyeballs failure for every address
            return any(_caused_by(inner, kind) for inner in current.exceptions)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _status_failure(request: httpx.Request, response: httpx.Response, body: bytes) -> StepFailed:
    status = response.status_code
    reason = f"HTTP {status} from {request.method} {_safe_url(request.url)}"
    if status in REDIRECT_STATUSES and "location" in response.headers:
        reason += " (a redirect; set follow_redirects: true to follow it)"
    excerpt = body[:EXCERPT_CHARS].decode("utf-8", errors="replace").strip()
    if excerpt:
        reason += f": {excerpt}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return StepFailed(
            reason, retryable=True, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    return StepFailed(reason, retryable=False)


def _decode_body(response: httpx.Response, body: bytes) -> tuple[Any, str | None]:
    """(parsed JSON, None) when the body is JSON, else (None, text truncated to 64 KiB)."""
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    looks_json = content_type in ("", "application/json") or content_type.endswith("+json")
    if body and looks_json:
        try:
            return orjson.loads(body), None
        except orjson.JSONDecodeError:
            pass
    encoding = response.charset_encoding or "utf-8"
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # final=False drops a multi-byte character cut in half by the limit instead of mangling it
    text = decoder.decode(body[:TEXT_LIMIT], final=len(body) <= TEXT_LIMIT)
    return None, text
