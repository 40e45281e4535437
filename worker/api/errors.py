"""Every error of the API is a JSON body `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    StoreError,
    WorkerError,
)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
         500: "internal", 503: "unavailable"}


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": CODES.get(status, "error"), "message": message, **extra}}


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **extra), status_code=status, headers=headers)


class ApiError(Exception):
    """Raised by handlers and dependencies: becomes `error(status, message)`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "(body)"


STATUS_OF: dict[type[Exception], int] = {NotFound: 404, Conflict: 409, PermissionDenied: 403, InvalidRequest: 400,
                                         WorkerError: 422}
"""Runtime errors whose message is the answer (Starlette picks the most specific class: NotFound before WorkerError)."""


def _plain(status: int) -> Any:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return error(status, str(exc))

    return handler


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint (see /openapi.json)"
        return error(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                return error(400, f"the body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}")
            problems.append({"field": _location(tuple(e.get("loc", ()))), "message": str(e.get("msg"))})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return error(422, f"invalid request: {summary}", problems=problems)

    for kind, status in STATUS_OF.items():
        app.add_exception_handler(kind, _plain(status))

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        return error(503, f"the database is unavailable: {exc}", {"Retry-After": "1"})

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        return error(500, f"configuration error: {exc}")

    @app.exception_handler(OSError)
    async def _unavailable(_: Request, exc: OSError) -> JSONResponse:
        return error(503, f"a service is unavailable: {exc}", {"Retry-After": "1"})
