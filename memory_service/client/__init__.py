"""A typed Python client of the service's HTTP API: `MemoryClient` and `AsyncMemoryClient`.

    from memory_service.client import MemoryClient
    from memory_service.memories.schemas import MemoryIn, MemorySearch

    with MemoryClient("http://127.0.0.1:8080", api_key="msk_...") as client:
        client.store(MemoryIn(namespace="agent-1", content="The user prefers window seats."))
        hits = client.search_memories(MemorySearch(namespace="agent-1", query="seating"))

Requests and answers are the API's own pydantic models (`memories.schemas`,
`search.schemas`, `documents.schemas`, `documents.jobs.schemas`,
`providers.schemas`): what the server validates is what the client builds, and nothing
here imports the server's engine, models or torch.

- Every call is described once (`Call`: method, path, body, answer model) and sent by
  either client, so the two cannot drift apart.
- An error answer raises the `ApiError` subclass of its body's `type` (`NotFound`,
  `Forbidden`, `RateLimited`, ...; an unknown type falls back on its status), carrying
  `status`, `type`, `message` and `details`.
- A 503, or a 429 `rate_limited`, is retried up to `max_retries` times, after the answer's
  `Retry-After` (at most `max_retry_wait` seconds; 1 s when absent). A rate-limited request
  was refused before any work. After a 503, a call is sent again only when sending it twice
  does no harm: reads, and writes that repeat as they were (a stored content is answered
  with the stored memory, a patch or forget applies once); a new ingestion job is not, as it
  could be queued twice. A 429 `budget_exhausted` waits for the next day: not retried. Lost
  connections are not retried: whether a write landed is unknown, and the caller decides.
- `iter_memories` and `iter_ingest_jobs` follow `next_cursor` to the end.
"""

from memory_service.client.calls import Call, Calls
from memory_service.client.clients import AsyncMemoryClient, MemoryClient
from memory_service.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    error_of,
)

__all__ = [
    "ApiError",
    "AsyncMemoryClient",
    "BadRequest",
    "Call",
    "Calls",
    "Conflict",
    "Forbidden",
    "MemoryClient",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "error_of",
]
