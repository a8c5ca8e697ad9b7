"""Errors as RFC 9457 problem details (`application/problem+json`), for every status the API
answers with: ours, FastAPI's validation errors, Starlette's 404/405, and anything unexpected
(a 500 that says nothing about the cause; the log has the type, never a value)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from devices.errors import StorageError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise to answer with a problem: `status`, a short `detail` safe to show, extras."""

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(what: str = "not found") -> Problem:
    """What does not exist and what is outside the caller's places look the same."""
    return Problem(404, what)


def problem_response(
    status: int,
    detail: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}),
                        media_type=PROBLEM_JSON)  # fmt: skip


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Where and what, never the rejected input itself (it may be personal)."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]  # fmt: skip


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail or ""), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422, "the request does not match the API", errors=_validation_errors(exc.errors())
        )

    @app.exception_handler(StorageError)
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        """InfluxDB or a database away: 503, try later; a query it refuses (a function that
        does not apply to a text field): 422 with its words, which name types, not values."""
        if exc.retryable:
            return problem_response(503, "storage unavailable; try again",
                                    headers={"Retry-After": "5"})  # fmt: skip
        return problem_response(422, f"the query was refused: {str(exc)[:200]}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("API %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return problem_response(500, "internal error; the gateway log has the details")


__all__ = ["PROBLEM_JSON", "Problem", "install", "not_found", "problem_response"]
