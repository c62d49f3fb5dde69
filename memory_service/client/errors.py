"""The client's exceptions: one per error `type` of the API's error body."""

from typing import Any, ClassVar

import httpx


class ApiError(Exception):
    """An error answer of the service: its status and the body's `type`, `message` and
    `details` (the one error shape of the API)."""

    types: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, status: int, type_: str, message: str, details: Any) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.details = details


class BadRequest(ApiError):
    types = frozenset(
        {"invalid_request", "invalid_value", "upstream_rejected", "unsupported_media_type"}
    )


class Unauthorized(ApiError):
    types = frozenset({"unauthorized"})


class Forbidden(ApiError):
    types = frozenset({"forbidden"})


class NotFound(ApiError):
    types = frozenset({"not_found"})


class Conflict(ApiError):
    types = frozenset({"conflict"})


class PayloadTooLarge(ApiError):
    types = frozenset({"payload_too_large"})


class Unprocessable(ApiError):
    """The request was understood and refused: validation, limits, input the model refuses."""

    types = frozenset({"validation_error", "limit_exceeded", "input_too_long", "input_rejected"})


class RateLimited(ApiError):
    types = frozenset({"rate_limited", "budget_exhausted"})


class Unavailable(ApiError):
    """503: the database, the embedder or chat is unavailable, or the service is overloaded."""

    types = frozenset(
        {
            "service_unavailable",
            "database_unavailable",
            "embedder_unavailable",
            "chat_unavailable",
            "overloaded",
        }
    )


class ServerError(ApiError):
    types = frozenset({"internal_error"})


_BY_TYPE = {
    name: kind
    for kind in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        RateLimited,
        Unavailable,
        ServerError,
    )
    for name in kind.types
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def error_of(response: httpx.Response) -> ApiError:
    """The exception for an error answer; a body that is not the API's shape (a proxy's
    page, say) keeps its text as the message."""
    try:
        error = response.json()["error"]
        type_, message, details = str(error["type"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        type_, message, details = "http_error", response.text[:500], None
    kind = _BY_TYPE.get(type_) or _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else BadRequest
    return kind(response.status_code, type_, message, details)
