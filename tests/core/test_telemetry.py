"""`GET /metrics`, request ids and JSON logs, on the real app and database."""

import asyncio
import json
import logging
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memory_service.bootstrap import Resources
from memory_service.core.db import CheckoutCountingPool, create_engine
from memory_service.core.telemetry import JsonFormatter, RequestIdFilter
from memory_service.search import index_repository
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


async def test_metrics_show_each_vector_index_and_its_measured_recall(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    measured = {"recall": 0.875, "samples": 8, "measured_at": datetime.now(UTC).isoformat()}
    async with resources.engine.begin() as conn:  # what the recall sampler records
        await index_repository.ensure_rows(conn, resources.space.id)
        await index_repository.record_recall(conn, resources.space.id, "memory", "1%", measured)
    await client.post("/v1/memories", json=memory_body("One row, no index yet."))

    found = samples((await client.get("/metrics")).text)
    states = {
        state: found[("memory_vector_index_state", (("state", state), ("table", "memory")))]
        for state in ("exact", "building", "ready", "rebuilding")
    }
    assert states == {"exact": 1, "building": 0, "ready": 0, "rebuilding": 0}
    recall = (("selectivity", "1%"), ("table", "memory"))
    assert found[("memory_vector_index_recall", recall)] == 0.875
    assert found[("memory_vector_index_recall_samples", recall)] == 8
    assert found[("memory_vector_index_rows", (("measure", "tail"), ("table", "memory")))] == 0
    assert found[("memory_db_pool_checkouts", ())] == 0


async def test_the_pool_counts_the_callers_waiting_for_a_connection(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    pool = engine.sync_engine.pool
    assert isinstance(pool, CheckoutCountingPool)
    try:
        async with engine.connect():
            waiting = asyncio.create_task(engine.connect().__aenter__())
            for _ in range(500):  # bounded: until the second caller waits in the pool
                if pool.checkouts == 1:
                    break
                await asyncio.sleep(0.01)
            assert pool.checkouts == 1
        second = await asyncio.wait_for(waiting, 30)
        assert pool.checkouts == 0
        await second.close()
    finally:
        await engine.dispose()


async def test_the_pool_writes_no_line_per_checkout(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool's logger is named after its class, under the service's INFO logging."""
    engine = create_engine(database_url)
    with caplog.at_level(logging.INFO, logger="memory_service"):
        async with engine.connect():
            pass
        await engine.dispose()
    assert [r.message for r in caplog.records if "Pool" in r.name] == []


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
