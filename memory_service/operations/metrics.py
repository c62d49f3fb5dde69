"""What `GET /metrics` exports, in Prometheus text format.

The process's counters (`core/telemetry.py`: HTTP requests, embedding calls) plus figures
read when scraped: breaker state per provider, texts waiting in the coalescer, pending and
failed memories, ingestion jobs by state and the age of the oldest due one, the database
pool (connections by state and checkouts under way), today's cloud budget, and per vector
table of the service's space its index state, rows waiting outside the index, rows at the
last build and measured recall@k per selectivity class (the figures of `GET /v1/spaces`,
without its exact row count). The database figures are a few queries per scrape, each
answered from an index or a small table: none scans the memories.
"""

from collections.abc import AsyncIterator, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memory_service.bootstrap import Resources
from memory_service.core.db import CheckoutCountingPool
from memory_service.core.telemetry import PROCESS_METRICS
from memory_service.documents.jobs import repository as jobs
from memory_service.embeddings.batching import CoalescingEmbedder
from memory_service.memories import repository as memories
from memory_service.providers.breaker import BreakerState
from memory_service.search.indexes import IndexState, IndexStatus

BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
JOB_STATES = ("queued", "running", "succeeded", "failed", "dead")
INDEX_STATES: tuple[IndexState, ...] = ("exact", "building", "ready", "rebuilding")


class _Snapshot(Collector):
    """Gauges of figures read once for this scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def scrape(resources: Resources) -> bytes:
    """The exposition: the process's counters, then the figures read for this scrape."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in PROCESS_METRICS:
        registry.register(metric)
    registry.register(_Snapshot([family async for family in _read(resources)]))
    return generate_latest(registry)


async def _read(resources: Resources) -> AsyncIterator[Metric]:
    for family in _in_process(resources):
        yield family
    async with resources.engine.connect() as conn:
        unembedded = await memories.unembedded_counts(conn)
        by_state, oldest = await jobs.queue_figures(conn)
    status = GaugeMetricFamily(
        "memory_memories_unembedded", "Memories without a vector, by status.", labels=["status"]
    )
    for name, count in sorted(unembedded.items()):
        status.add_metric([name], count)
    yield status
    states = GaugeMetricFamily("memory_ingest_jobs", "Ingestion jobs by state.", labels=["state"])
    for state in JOB_STATES:
        states.add_metric([state], by_state.get(state, 0))
    yield states
    yield GaugeMetricFamily(
        "memory_ingest_oldest_due_seconds",
        "Age of the oldest queued job due to run (0: none waits).",
        value=oldest or 0.0,
    )
    for family in _indexes(await resources.indexes.status(count_rows=False)):
        yield family
    if resources.chat is not None:
        usage = await resources.chat.budget.usage()
        budget = GaugeMetricFamily(
            "memory_cloud_budget", "Today's cloud chat budget (UTC day).", labels=["measure"]
        )
        for measure in ("requests", "tokens", "max_requests", "max_tokens"):
            budget.add_metric([measure], usage[measure])
        yield budget


def _in_process(resources: Resources) -> Iterator[Metric]:
    breakers = GaugeMetricFamily(
        "memory_provider_breaker_state",
        "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
        labels=["task", "provider"],
    )
    if resources.providers is not None:
        for task, registry in (
            ("embed", resources.providers.embed),
            ("chat", resources.providers.chat),
        ):
            for provider in registry.providers:
                breakers.add_metric([task, provider.name], BREAKER_VALUES[provider.breaker.state])
    yield breakers
    embedder = resources.embedder
    depth = embedder.depth if isinstance(embedder, CoalescingEmbedder) else 0
    yield GaugeMetricFamily(
        "memory_coalescer_waiting_texts", "Texts waiting for an embedding flush.", value=depth
    )
    pool = resources.engine.sync_engine.pool
    connections = GaugeMetricFamily(
        "memory_db_pool_connections", "Database pool connections by state.", labels=["state"]
    )
    for state, count in (
        ("in_use", getattr(pool, "checkedout", lambda: 0)()),
        ("idle", getattr(pool, "checkedin", lambda: 0)()),
        ("overflow", max(0, getattr(pool, "overflow", lambda: 0)())),
    ):
        connections.add_metric([state], count)
    yield connections
    checkouts = pool.checkouts if isinstance(pool, CheckoutCountingPool) else 0
    yield GaugeMetricFamily(
        "memory_db_pool_checkouts",
        "Callers waiting for a pooled connection: a free one, or a new one connecting.",
        value=checkouts,
    )


def _indexes(statuses: list[IndexStatus]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "memory_vector_index_state",
        "Vector index state per table: 1 for the current state (exact: no index yet).",
        labels=["table", "state"],
    )
    rows = GaugeMetricFamily(
        "memory_vector_index_rows",
        "Rows with a vector per table: outside the index (tail), in it at its last build.",
        labels=["table", "measure"],
    )
    recall = GaugeMetricFamily(
        "memory_vector_index_recall",
        "Measured recall@k of sampled searches per selectivity class, over the last samples.",
        labels=["table", "selectivity"],
    )
    samples = GaugeMetricFamily(
        "memory_vector_index_recall_samples",
        "Samples behind memory_vector_index_recall.",
        labels=["table", "selectivity"],
    )
    for status in statuses:
        for name in INDEX_STATES:
            state.add_metric([status.table, name], int(status.index_state == name))
        rows.add_metric([status.table, "tail"], status.tail_rows)
        rows.add_metric([status.table, "at_build"], status.rows_at_build or 0)
        for selectivity, measured in sorted(status.recall.items()):
            recall.add_metric([status.table, selectivity], measured["recall"])
            samples.add_metric([status.table, selectivity], measured["samples"])
    yield from (state, rows, recall, samples)
