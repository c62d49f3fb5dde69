"""Errors of model management; each carries its HTTP status (see core/errors.py).

    MemoryServiceError
    └── AdminDisabled (403 admin_disabled): admin endpoints off (no MEMORY_ADMIN_TOKEN)
    ServiceUnavailable (503)
    ├── HubUnreachable (503 hub_unreachable): offline mode, or the hub does not answer
    └── VllmStartFailed (503 vllm_start_failed): the server exited or never became healthy

The CLI prints `message` and exits non-zero; the admin endpoints render the usual body.
"""

from memory_service.core.errors import MemoryServiceError, ServiceUnavailable


class HubUnreachable(ServiceUnavailable):
    error_type = "hub_unreachable"


class VllmStartFailed(ServiceUnavailable):
    error_type = "vllm_start_failed"


class AdminDisabled(MemoryServiceError):
    """The admin endpoints are off: no MEMORY_ADMIN_TOKEN is configured."""

    status_code = 403
    error_type = "admin_disabled"
