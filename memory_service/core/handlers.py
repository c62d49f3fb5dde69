"""The one place errors become HTTP responses: `{"error": {"type", "message", "details"}}`."""

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import errors as psycopg_errors
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from memory_service.core.db import failure_text
from memory_service.core.errors import MemoryServiceError

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    error_type: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"type": error_type, "message": message, "details": details}}
    return JSONResponse(status_code=status, content=jsonable_encoder(body), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MemoryServiceError)
    async def _domain(request: Request, exc: MemoryServiceError) -> JSONResponse:
        return error_response(
            exc.status_code, exc.error_type, exc.message, exc.details, exc.headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors()
        ]
        return error_response(422, "validation_error", _summary(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, error_type, str(exc.detail))

    @app.exception_handler(SQLAlchemyTimeoutError)
    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        reason = database_unavailable(exc)
        orig = getattr(exc, "orig", None)
        if reason is None and isinstance(orig, psycopg_errors.DataError):
            # A value the input contract let through and PostgreSQL refused: the request's
            # fault, and nothing was written (its transaction rolled back). No value is
            # repeated, here or in the log.
            sqlstate = orig.sqlstate
            log.warning(
                "a value was refused by the database on %s %s (SQLSTATE %s)",
                request.method,
                _route(request),
                sqlstate,
            )
            return error_response(
                422,
                "invalid_value",
                "the database refused a value of this request",
                {"sqlstate": sqlstate},
            )
        if reason is None:
            return await _unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, _route(request), reason)
        return error_response(
            503,
            "database_unavailable",
            f"the database did not answer in time ({reason}); retry shortly",
            {"reason": reason},
            {"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error on %s %s: %s", request.method, _route(request), failure_text(exc)
        )
        return error_response(500, "internal_error", "internal server error")


def database_unavailable(exc: BaseException) -> str | None:
    """Why the database could not serve a request, when that is the fault (a 503, worth a
    retry), not the request's: the pool had no free connection in time, a statement or lock
    wait ran past the session's timeout, or the server is unreachable or restarting.
    None for every other error, which stays a 500."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return "no free database connection (pool exhausted)"
    orig = getattr(exc, "orig", None)
    if isinstance(orig, psycopg_errors.LockNotAvailable):
        return "lock_timeout"
    if isinstance(orig, psycopg_errors.QueryCanceled):
        return "statement_timeout"
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(orig, psycopg.OperationalError)
    ):
        return "database unreachable"
    return None


def _summary(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"


def _route(request: Request) -> str:
    """The route's template (`/v1/memories/{memory_id}`) for a log line: the request's own
    path may carry values."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "an unknown route"))
