"""HTTP to providers: the clients, one call, and every failure mapped onto the error tree.

Each provider gets a client of its own (`new_client`, called by the factory), with a
connection pool sized for its use, so no provider and no use can exhaust another's: open chat
streams cannot take the connections an embed needs, nor a slow embedder a fast one's.
Connect and read timeouts are separate (`httpx.Timeout(read, connect=...)`): a dead host
should cost the connect timeout, a slow model the read timeout.
"""

import json
import re
from typing import Any, Literal

import httpx

from memory_service.providers.errors import (
    ProviderConnectError,
    ProviderInputError,
    ProviderModelNotFound,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)

Use = Literal["embed", "chat", "watcher", "health"]

# (max_connections, max_keepalive_connections) of one client of each use: each embedding
# and chat provider has one; the registrations watcher and the vLLM health checks need a few.
POOLS: dict[Use, tuple[int, int]] = {
    "embed": (64, 16),
    "chat": (64, 16),
    "watcher": (16, 4),
    "health": (8, 2),
}


def new_client(use: Use, timeout: httpx.Timeout | None = None) -> httpx.AsyncClient:
    """A client with the pool of `use`; the caller closes it. Every call this service makes
    to a provider or a vLLM server it started goes through a client made here."""
    connections, keepalive = POOLS[use]
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=keepalive),
        timeout=timeout if timeout is not None else httpx.Timeout(5.0),
    )


async def send(
    http: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    timeouts: httpx.Timeout,
    payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """The response, whatever its status; transport failures raise ProviderUnavailable kinds."""
    try:
        return await http.request(method, url, json=payload, headers=headers, timeout=timeouts)
    except httpx.HTTPError as exc:
        raise transport_error(provider, url, exc) from exc


def transport_error(provider: str, url: str, exc: httpx.HTTPError) -> ProviderUnavailable:
    """The provider error for an httpx failure on the way to `url` or back: every provider
    call, embedding or chat, streamed or not, maps them here."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ProviderConnectError(provider, f"cannot connect to {url}: {exc!r}")
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(provider, f"no answer from {url} in time: {exc!r}")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return ProviderServerError(provider, f"connection to {url} dropped: {exc!r}")
    return ProviderUnavailable(provider, f"{url}: {exc!r}")


# Upstream words reach clients (error bodies, X-Memory-Route-Reason, /v1/providers): anything
# that looks like a credential is cut out, and the message is capped.
MAX_UPSTREAM_MESSAGE = 300
_CREDENTIALS = re.compile(
    r"(?i:bearer)\s+\S+"  # an Authorization value
    r"|\b(?:sk|gsk|msk|xai|pk|rk)[-_][A-Za-z0-9_\-*.]{6,}"  # common API key prefixes
    r"|\bAIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|[A-Za-z0-9_\-+/=]{32,}"  # any long token-like run
)


def redact(text: str) -> str:
    """`text` without credential-like substrings, at most MAX_UPSTREAM_MESSAGE characters."""
    cleaned = _CREDENTIALS.sub("[redacted]", text)
    if len(cleaned) <= MAX_UPSTREAM_MESSAGE:
        return cleaned
    return cleaned[:MAX_UPSTREAM_MESSAGE] + " [cut]"


def error_message(response: httpx.Response) -> str:
    """The server's own words, redacted (`redact`): OpenAI/vLLM `{"error": {"message"}}`,
    older vLLM `{"object": "error", "message"}`, Ollama `{"error": "..."}`, Gemini's
    OpenAI-compatible `[{"error": {"code", "message", "status"}}]`, or the raw text."""
    return f"HTTP {response.status_code}: {redact(_server_words(response))}"


def _server_words(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text


def raise_for_status(provider: str, response: httpx.Response) -> None:
    """2xx passes. 404: the model is not served here. Other 4xx: the input (or the request)
    is at fault, except 401/403/408/429 and Gemini's 400 `API_KEY_INVALID`, which say the
    provider cannot serve us now."""
    status = response.status_code
    if status < 300:
        return
    message = error_message(response)
    if status == 404:
        raise ProviderModelNotFound(provider, message)
    if status >= 500:
        raise ProviderServerError(provider, message)
    if status in (401, 403, 408, 429) or "API_KEY_INVALID" in response.text:
        raise ProviderUnavailable(provider, message)
    raise ProviderInputError(provider, message, status=status)


def route_missing(response: httpx.Response) -> bool:
    """Gin's own 404 (`404 page not found`, plain text): Ollama has no such route. Any other
    404, such as a proxy's page for a wrong base_url, is not taken for an old Ollama."""
    return response.status_code == 404 and response.text.strip() == "404 page not found"
