"""What the `http` step sends and how it reads answers: limits, headers, retry hints, failures, bodies.

Pure helpers, no I/O: `worker/steps/http.py` drives the calls; `llm`, `tool` and `agent` share
`validate_args`, `parse_retry_after` and `USER_AGENT`.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from worker.errors import StepFailed
from worker.steps.base import StepContext

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
            reason, retryable=True, retry_after=parse_retry_after(response.headers.get("retry-after")), status=status
        )
    return StepFailed(reason, retryable=False, status=status)


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
