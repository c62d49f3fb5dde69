"""What `GET /ready` checks: the database answers, its schema is at head, and the embedder
embeds."""

import logging

from memory_service.bootstrap import Resources
from memory_service.core.db import current_revision, ping
from memory_service.core.migrations import head_revision
from memory_service.providers.errors import ProviderError

log = logging.getLogger(__name__)


async def readiness_checks(resources: Resources) -> dict[str, str]:
    """Each check's state: "ok", or why not. The state never names a provider or its
    address (`/ready` is open to anyone): the log does."""
    checks: dict[str, str] = {}
    try:
        await ping(resources.engine)
        checks["database"] = "ok"
        current, head = await current_revision(resources.engine), head_revision()
        checks["schema"] = "ok" if current == head else f"at {current}, head is {head}"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["schema"] = "unknown: database unreachable"
    try:
        await resources.embedder.embed(["readiness probe"])
        checks["embedder"] = "ok"
    except ProviderError as exc:
        log.warning("not ready: embedder unavailable: %s", exc)
        checks["embedder"] = "unavailable"
    return checks
