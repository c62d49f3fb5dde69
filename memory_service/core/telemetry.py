"""Telemetry: Prometheus metrics of this process, request ids, and JSON logs.

The counters and histograms here are the process's own (`prometheus-client` objects kept
out of its global registry): HTTP requests by route template, method and status with their
latency, and embedding calls by provider. `operations/metrics.py` adds the figures read at
scrape time (breakers, queue depth, pending memories, jobs, pool, budget) and exports them
all.

Every HTTP request gets an id: the client's `X-Request-Id` when it is a short token, else a
new one. It is returned in the response's `X-Request-Id` and set on every log line written
while the request runs (`request_id`; `MEMORY_LOG_FORMAT=json` prints it).
"""

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# Methods counted by name; any other (a client may send any token) is `other`, so no client
# can grow the label sets.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

HTTP_REQUESTS = Counter(
    "memory_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=None,
)
HTTP_SECONDS = Histogram(
    "memory_http_request_duration_seconds",
    "Time to the end of the response, by route template and method.",
    ["route", "method"],
    registry=None,
)
EMBED_CALLS = Counter(
    "memory_embed_calls_total",
    "Embedding calls to a provider, by outcome (ok, input_error, unavailable, error).",
    ["provider", "outcome"],
    registry=None,
)
EMBED_TEXTS = Counter(
    "memory_embed_texts_total",
    "Texts embedded by a provider (calls that returned vectors).",
    ["provider"],
    registry=None,
)
EMBED_SECONDS = Histogram(
    "memory_embed_duration_seconds",
    "Latency of a provider's embedding calls that returned vectors.",
    ["provider"],
    registry=None,
)
EMBED_BATCH = Histogram(
    "memory_embed_batch_texts",
    "Texts per embedding call to a provider.",
    ["provider"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=None,
)
PROCESS_METRICS = (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    EMBED_CALLS,
    EMBED_TEXTS,
    EMBED_SECONDS,
    EMBED_BATCH,
)


def observe_embed(provider: str, texts: int, outcome: str, seconds: float | None) -> None:
    """Count one provider call; latency and texts for a call that returned vectors."""
    EMBED_CALLS.labels(provider, outcome).inc()
    EMBED_BATCH.labels(provider).observe(texts)
    if outcome == "ok" and seconds is not None:
        EMBED_TEXTS.labels(provider).inc(texts)
        EMBED_SECONDS.labels(provider).observe(seconds)


class RequestTelemetry:
    """ASGI middleware: the request id (context and response header), and the request's
    count and latency under its route template (`unmatched` for no route), never its path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _CLIENT_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)
            REQUEST_ID.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id`: the running request's id, or None outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the
    exception's type and stack when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """The root logger: `text` (time, level, logger, message) or `json` (one object a line,
    with the request id), UTC times; uvicorn's loggers go through it too."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
