"""Domain errors. Each carries its HTTP status; one handler renders them all.

    MemoryServiceError (500 internal_error)
    ├── InvalidRequest (400 invalid_request)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)
    ├── LimitExceeded (422 limit_exceeded)
    ├── InputTooLong (422 input_too_long)
    ├── InputRejected (422 input_rejected)
    ├── UpstreamRejected (the provider's 4xx, upstream_rejected)
    ├── BudgetExhausted (429 budget_exhausted)
    └── ServiceUnavailable (503 service_unavailable)
        ├── EmbedderUnavailable (503 embedder_unavailable)
        ├── Overloaded (503 overloaded, Retry-After)
        └── ChatUnavailable (503 chat_unavailable)

    StartupError: refused start (schema behind, embedding space changed); not an HTTP error.

Every error body is `{"error": {"type": ..., "message": ..., "details": ...}}`.
"""

from typing import Any, ClassVar


class MemoryServiceError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Extra response headers (the chat gateway's routing headers on its errors).
        self.headers: dict[str, str] = {}


class InvalidRequest(MemoryServiceError):
    status_code = 400
    error_type = "invalid_request"


class Unauthorized(MemoryServiceError):
    """No credentials, or credentials that are not (or no longer) valid."""

    status_code = 401
    error_type = "unauthorized"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.headers["WWW-Authenticate"] = "Bearer"


class Forbidden(MemoryServiceError):
    """Understood, but not for this caller or this configuration (a namespace the key has no
    access to, a scope it lacks, a path not allow-listed)."""

    status_code = 403
    error_type = "forbidden"


class NotFound(MemoryServiceError):
    status_code = 404
    error_type = "not_found"


class Conflict(MemoryServiceError):
    status_code = 409
    error_type = "conflict"


class LimitExceeded(MemoryServiceError):
    status_code = 422
    error_type = "limit_exceeded"


class InputTooLong(MemoryServiceError):
    """Text longer than the embedding model's token window: rejected, never truncated."""

    status_code = 422
    error_type = "input_too_long"


class InputRejected(MemoryServiceError):
    """The embedder refused a query (a remote server's 4xx for its input)."""

    status_code = 422
    error_type = "input_rejected"


class UpstreamRejected(MemoryServiceError):
    """A chat provider refused the client's request (its own 4xx): relayed, not retried."""

    status_code = 400
    error_type = "upstream_rejected"

    def __init__(self, message: str, status: int, details: Any = None) -> None:
        super().__init__(message, details)
        self.status_code = status  # type: ignore[misc]


class BudgetExhausted(MemoryServiceError):
    """The daily cloud chat budget is spent; it resets at 00:00 UTC."""

    status_code = 429
    error_type = "budget_exhausted"


class ServiceUnavailable(MemoryServiceError):
    status_code = 503
    error_type = "service_unavailable"


class EmbedderUnavailable(ServiceUnavailable):
    error_type = "embedder_unavailable"


class Overloaded(ServiceUnavailable):
    """This process has more work queued for its embedder than it accepts; retry shortly."""

    error_type = "overloaded"

    def __init__(self, message: str, details: Any = None, retry_after_seconds: int = 1) -> None:
        super().__init__(message, details)
        self.headers["Retry-After"] = str(retry_after_seconds)


class ChatUnavailable(ServiceUnavailable):
    error_type = "chat_unavailable"


class StartupError(Exception):
    """The service must not start; the message says why and what fixes it."""
