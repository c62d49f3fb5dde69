"""`GET /metrics`, request ids and JSON logs, on the real app and database."""

import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memory_service.core.telemetry import JsonFormatter, RequestIdFilter
from tests.fakes import FlakyProvider
from tests.memories.factories import memory_body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_requests_by_route_template_and_read_the_queues(
    client: httpx.AsyncClient, embedder: FlakyProvider
) -> None:
    stored = (await client.post("/v1/memories", json=memory_body("A fact."))).json()
    await client.get(f"/v1/memories/{stored['id']}")
    await client.get("/v1/memories/00000000-0000-0000-0000-000000000000")
    embedder.down = True
    await client.post("/v1/memories", json=memory_body("Stays pending."))

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    route = "/v1/memories/{memory_id}"
    assert (
        found[
            ("memory_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))
        ]
        >= 1
    )
    assert (
        found[
            ("memory_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))
        ]
        >= 1
    )
    assert stored["id"] not in response.text, "a path's values never become labels"
    assert found[("memory_memories_unembedded", (("status", "pending"),))] == 1
    assert found[("memory_ingest_jobs", (("state", "queued"),))] == 0
    assert ("memory_coalescer_waiting_texts", ()) in found
    pool = {
        state: found[("memory_db_pool_connections", (("state", state),))]
        for state in ("in_use", "idle")
    }
    assert pool["in_use"] + pool["idle"] >= 1, "the requests above opened connections"


async def test_a_method_outside_http_s_own_is_counted_as_other(
    client: httpx.AsyncClient,
) -> None:
    """A client may send any token as its method: none becomes a label of its own."""
    await client.request("BREW", "/health")
    text = (await client.get("/metrics")).text
    assert 'method="BREW"' not in text
    assert 'method="other"' in text


async def test_a_request_id_is_kept_or_made_and_returned(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-Id": "trace-42.a"})
    assert given.headers["x-request-id"] == "trace-42.a"
    made = await client.get("/health", headers={"X-Request-Id": "not a token"})
    assert made.headers["x-request-id"] != "not a token"
    assert len(made.headers["x-request-id"]) == 32


async def test_json_log_lines_carry_the_request_id(
    client: httpx.AsyncClient, embedder: FlakyProvider, caplog: pytest.LogCaptureFixture
) -> None:
    embedder.down = True  # the store logs that its embedding was deferred
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    lines: list[str] = []
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    logging.getLogger("memory_service").addHandler(handler)
    try:
        response = await client.post(
            "/v1/memories", json=memory_body("Deferred."), headers={"X-Request-Id": "req-7"}
        )
    finally:
        logging.getLogger("memory_service").removeHandler(handler)
    assert response.json()["status"] == "pending"
    entries = [json.loads(line) for line in lines]
    deferred = [e for e in entries if "embedding deferred" in e["message"]]
    assert deferred and all(e["request_id"] == "req-7" for e in deferred)
    assert {"time", "level", "logger", "message", "request_id"} <= set(deferred[0])
