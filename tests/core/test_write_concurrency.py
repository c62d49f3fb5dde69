"""Colliding writes and a crash, on a PostgreSQL server this module owns.

Sixteen writers run the service's real write statements (the functions of
`memories/repository.py`) over one small set of memories, so they keep landing on the same
rows: upserts merging duplicate contents, the reconciler's claim and embedding UPDATE,
claims that lapse at once (so several writers embed the same rows, and only the holder
writes), the inline embedding UPDATE of rows other writers are patching (some with stale
content), content and non-content PATCHes, deletes and forgets. pg_textsearch 1.0.0's `bm25` index
wedged exactly such UPDATEs forever, in an LWLock that ignores `statement_timeout`
(timescale/pg_textsearch #370): an index that does that fails this test. The space's
diskann index (pgvectorscale), built on the first load's rows, is there for every write of
the second load, which runs beside a concurrent rebuild of it (`CREATE INDEX CONCURRENTLY`,
then `DROP INDEX CONCURRENTLY`).

Then PostgreSQL is killed (`pg_ctl stop -m immediate`: no checkpoint, WAL replay at the next
start), restarted and loaded again. The server is private to this module, so the crash
touches no other test's database. Time only bounds the test: a write that never returns
fails it, naming the stuck operations and what the backends wait on. Nothing asserts on
durations.
"""

import asyncio
import hashlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import psycopg
import pytest
from psycopg import errors
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.db import AnyRow, create_engine, set_local
from memory_service.core.tables import memory
from memory_service.embeddings.spaces import register_space
from memory_service.memories import repository
from memory_service.memories.repository import PendingText, content_hash
from memory_service.memories.schemas import MemoryFilters
from memory_service.providers.embedding import Vectors
from memory_service.search.index_repository import count_tail
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from tests.own_postgres import OwnServer, own_postgres

WRITERS = 16
LOAD_SECONDS = 4.0
MAX_OPERATIONS = 400  # per writer and load
DEADLINE_SECONDS = 60.0  # a load not over by then has a statement that will never return
DIMENSION = 384
NAMESPACES = ("ns-a", "ns-b")
AGENTS = ("agent-0", "agent-1", "agent-2")
USERS = ("user-0", "user-1", None)
SESSIONS = ("session-0", None)
TAGS = ("red", "green", "blue")
TOPICS = ("travel", "work", "home")
WORDS = ("harbor", "violet", "engine", "orchard", "signal", "granite")
# The writers' operations (Writer methods), each as many times as its share of the load.
MIX: tuple[str, ...] = (
    ("store",) * 6
    + ("reconcile",) * 3
    + ("reconcile_lapsed",) * 3
    + ("patch",) * 5
    + ("delete",) * 2
    + ("forget",)
)
CONTENTS = tuple(f"The {WORDS[i % 6]} and the {WORDS[i // 6]} note {i}." for i in range(24))


def vector_of(content: str) -> Vectors:
    """A deterministic unit vector per content: a stored embedding shows which text it is of."""
    rng = np.random.default_rng(int.from_bytes(content_hash(content)[:8], "big"))
    vector = rng.standard_normal((1, DIMENSION)).astype(np.float32)
    normalized: Vectors = vector / np.linalg.norm(vector)
    return normalized


def vectors_of(items: Sequence[PendingText]) -> Vectors:
    return np.concatenate([vector_of(item.content) for item in items])


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    yield from own_postgres("memory-crash-test-")


@dataclass
class Ledger:
    """What the writers were told, in event order (`tick`).

    A stored memory must survive unless a delete of it was tried, or a forget of its owner
    (namespace, agent; never patched) finished after the last store that acknowledged it
    began: such a forget may have removed it.
    """

    content_of: dict[UUID, str] = field(default_factory=dict)
    owner_of: dict[UUID, tuple[str, str]] = field(default_factory=dict)
    stored_at: dict[UUID, int] = field(default_factory=dict)
    forgotten_at: dict[tuple[str, str], int] = field(default_factory=dict)
    deleted: set[UUID] = field(default_factory=set)
    ran: Counter[str] = field(default_factory=Counter)
    _clock: Iterator[int] = field(default_factory=itertools.count)

    def tick(self) -> int:
        return next(self._clock)

    def stored(self, rows: Sequence[AnyRow], started_at: int) -> None:
        for row in rows:
            self.content_of[row.id] = row.content
            self.owner_of[row.id] = (row.namespace, row.agent_id)
            self.stored_at[row.id] = started_at

    def pick(self, rng: random.Random, count: int) -> list[UUID]:
        ids = list(self.content_of)
        return rng.sample(ids, min(count, len(ids)))

    def must_exist(self) -> set[UUID]:
        return {
            memory_id
            for memory_id, owner in self.owner_of.items()
            if memory_id not in self.deleted
            and self.stored_at[memory_id] > self.forgotten_at.get(owner, -1)
        }


@dataclass
class Writer:
    """One connection's worth of the service's writes, chosen at random."""

    number: int
    engine: AsyncEngine
    space_id: int
    ledger: Ledger
    rng: random.Random
    doing: str = "not started"

    async def run(self, stop_at: float) -> None:
        """Deal MIX, shuffled, round after round: a few turns of all writers run every kind."""
        deck: list[Callable[[], Awaitable[None]]] = [getattr(self, name) for name in MIX]
        self.rng.shuffle(deck)
        loop = asyncio.get_running_loop()
        for operation in itertools.islice(itertools.cycle(deck), MAX_OPERATIONS):
            if loop.time() >= stop_at:
                break
            try:
                await operation()
            except DBAPIError as exc:
                # A deadlock victim is rolled back and told so: its statement completed, and
                # the ledger never counted it as acknowledged.
                if not isinstance(exc.orig, errors.DeadlockDetected | errors.TransactionRollback):
                    raise
        self.doing = "finished"

    async def store(self) -> None:
        """POST /v1/memories/batch: the upsert, then the inline embedding of its pending rows."""
        namespace = self.rng.choice(NAMESPACES)
        rows = [self._row(namespace, c) for c in self.rng.sample(CONTENTS, self.rng.randint(1, 6))]
        started_at = self.ledger.tick()
        self.doing = f"upsert_memories of {len(rows)} rows"
        claim = repository.Claim(60)
        async with self.engine.begin() as conn:
            stored = await repository.upsert_memories(conn, rows, claim)
        self.ledger.stored(stored, started_at)
        self.ledger.ran["store"] += 1
        self.ledger.ran["merge"] += sum(not row.created for row in stored)
        pending = [
            PendingText(row.id, row.content, content_hash(row.content))
            for row in stored
            if row.status == "pending" and row.claimed
        ]
        await self._store_vectors(pending, claim, "inline store_vectors after a store")

    async def reconcile(self) -> None:
        await self._reconcile(repository.Claim(60), "reconcile")

    async def reconcile_lapsed(self) -> None:
        """A claim that lapses at once: other writers take the same rows meanwhile, and a
        vector is written only by the claim that holds the row then."""
        await self._reconcile(repository.Claim(0), "reconcile_lapsed")

    async def _reconcile(self, claim: repository.Claim, kind: str) -> None:
        self.doing = f"claim_pending ({kind})"
        async with self.engine.begin() as conn:
            batch = await repository.claim_pending(conn, self.space_id, claim, 8)
        await asyncio.sleep(0)  # other writers patch and claim between the two transactions
        await self._store_vectors(batch, claim, f"store_vectors ({kind})")
        self.ledger.ran[kind] += 1

    async def patch(self) -> None:
        values: dict[str, Any] = {"content": self.rng.choice(CONTENTS)}
        if self.rng.random() < 0.6:
            in_a_day = datetime.now(UTC) + timedelta(days=1)
            values = {
                "metadata": {"topic": self.rng.choice(TOPICS), "patched_by": self.number},
                "tags": self.rng.sample(TAGS, 2),
                "importance": self.rng.random(),
                "expires_at": self.rng.choice([None, in_a_day]),
            }
        for memory_id in self.ledger.pick(self.rng, 1):
            self.doing = f"update_memory of {memory_id} ({', '.join(values)})"
            claim = repository.Claim(60)
            async with self.engine.begin() as conn:
                try:
                    row = await repository.update_memory(conn, memory_id, values, claim)
                except repository.DuplicateContent:
                    row = None
            if row is not None:
                self.ledger.content_of[row.id] = row.content
                if "content" in values:
                    pending = [PendingText(row.id, row.content, content_hash(row.content))]
                    await self._store_vectors(pending, claim, "inline store_vectors after a patch")
            self.ledger.ran["patch"] += 1

    async def delete(self) -> None:
        for memory_id in self.ledger.pick(self.rng, 1):
            self.ledger.deleted.add(memory_id)
            self.doing = f"delete_memory of {memory_id}"
            async with self.engine.begin() as conn:
                await repository.delete_memory(conn, memory_id)
            self.ledger.ran["delete"] += 1

    async def forget(self) -> None:
        namespace, agent = self.rng.choice(NAMESPACES), self.rng.choice(AGENTS)
        self.doing = f"forget of {namespace}/{agent}"
        try:
            async with self.engine.begin() as conn:
                await repository.forget(conn, namespace, MemoryFilters(agent_id=agent))
            self.ledger.ran["forget"] += 1
        finally:
            self.ledger.forgotten_at[(namespace, agent)] = self.ledger.tick()

    async def _store_vectors(
        self, items: Sequence[PendingText], claim: repository.Claim, what: str
    ) -> None:
        if not items:
            return
        self.doing = f"{what} ({len(items)} rows)"
        async with self.engine.begin() as conn:
            await repository.store_vectors(conn, self.space_id, items, vectors_of(items), claim)

    def _row(self, namespace: str, content: str) -> dict[str, Any]:
        return {
            "namespace": namespace,
            "content": content,
            "content_hash": content_hash(content),
            "space_id": self.space_id,
            "metadata": {"topic": self.rng.choice(TOPICS), "writer": self.number},
            "tags": [self.rng.choice(TAGS)],
            "agent_id": self.rng.choice(AGENTS),
            "user_id": self.rng.choice(USERS),
            "session_id": self.rng.choice(SESSIONS),
            "importance": 0.5,
            "expires_at": None,
        }


async def run_load(
    own: OwnServer, engine: AsyncEngine, space_id: int, ledger: Ledger, seed: int
) -> None:
    """All writers at once for LOAD_SECONDS; fails, naming what is stuck, past the deadline."""
    writers = [
        Writer(n, engine, space_id, ledger, random.Random(seed * 1000 + n)) for n in range(WRITERS)
    ]
    ran_before = Counter(ledger.ran)
    stop_at = asyncio.get_running_loop().time() + LOAD_SECONDS
    tasks = {asyncio.create_task(writer.run(stop_at)): writer for writer in writers}
    _, pending = await asyncio.wait(tasks, timeout=DEADLINE_SECONDS)
    if pending:
        stuck = "\n".join(
            f"  writer {writer.number}: {writer.doing}"
            for task, writer in tasks.items()
            if task in pending
        )
        activity = await backend_activity(own.libpq_uri())
        # Only killing the backends ends their statements; cancelling would wait on them.
        own.crash()
        await asyncio.wait(pending, timeout=10)
        for task in pending:
            # Their errors are the kill's; the wedge is the failure.
            if task.done():
                task.exception()
            else:
                task.cancel()
        pytest.fail(
            f"write load wedged: {len(pending)} of {WRITERS} writers had not returned "
            f"{DEADLINE_SECONDS:.0f}s after a {LOAD_SECONDS:.0f}s load began:\n{stuck}\n"
            f"non-idle backends (pg_stat_activity) before the server was killed:\n{activity}",
            pytrace=False,
        )
    for task in tasks:
        task.result()
    idle = [kind for kind in (*set(MIX), "merge") if ledger.ran[kind] == ran_before[kind]]
    assert not idle, f"the load never completed: {idle}; it proved nothing about them"


async def backend_activity(libpq_uri: str) -> str:
    query = """
        SELECT pid, state, wait_event_type, wait_event,
            round(extract(epoch FROM now() - query_start)) AS seconds,
            left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()
        ORDER BY query_start
    """
    try:
        async with asyncio.timeout(15):
            conn = await psycopg.AsyncConnection.connect(libpq_uri, connect_timeout=5)
            async with conn:
                rows = await (await conn.execute(query)).fetchall()
    except Exception as exc:
        return f"  (could not read pg_stat_activity: {exc!r})"
    return "\n".join(
        f"  pid {pid} {state} {wait_type}/{wait} for {seconds}s: {sql}"
        for pid, state, wait_type, wait, seconds, sql in rows
    )


async def row_digests(engine: AsyncEngine) -> dict[UUID, str]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT id, md5(CAST(m.* AS text)) FROM memory m"))
        return {memory_id: digest for memory_id, digest in result}


async def assert_consistent(engine: AsyncEngine, space_id: int, ledger: Ledger) -> None:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    memory.c.id,
                    memory.c.namespace,
                    memory.c.content,
                    memory.c.content_hash,
                    memory.c.status,
                    memory.c.embedding,
                )
            )
        ).all()
        await conn.execute(text("ANALYZE memory"))
        disagreements = await index_disagreements(conn, space_id, [row.id for row in rows])
    assert rows, "the load stored nothing"
    for row in rows:
        assert row.content_hash == hashlib.sha256(row.content.encode()).digest(), row
        assert (row.status == "embedded") == (row.embedding is not None), row
        if row.embedding is not None:
            assert np.allclose(row.embedding, vector_of(row.content)[0], atol=1e-6), (
                f"memory {row.id} holds the vector of another text than {row.content!r}"
            )
    keys = [(row.namespace, row.content_hash) for row in rows]
    assert len(set(keys)) == len(keys), "two memories share a (namespace, content_hash)"
    missing = ledger.must_exist() - {row.id for row in rows}
    assert not missing, f"acknowledged stores lost: {sorted(map(str, missing))}"
    assert not disagreements, "indexes disagree with a sequential scan:\n" + "\n".join(
        disagreements
    )


# Queries the service's indexes answer; each runs once per parameter set.
INDEX_PROBES: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    ("id = ANY(CAST(:ids AS uuid[]))", [{}]),
    (
        "namespace = :namespace AND content_hash = :hash",
        [{"namespace": n, "hash": content_hash(c)} for n in NAMESPACES for c in CONTENTS],
    ),
    (
        # The head of the list, as the service pages it: on these few rows the planner
        # serves a whole namespace from (namespace, content_hash) and sorts; a short page
        # makes the ordered scan of (namespace, created_at, id) the cheaper plan.
        "namespace = :namespace ORDER BY created_at DESC, id DESC LIMIT 3",
        [{"namespace": n} for n in NAMESPACES],
    ),
    ("space_id = :space_id AND status = 'pending' ORDER BY created_at, id", [{}]),
    ("space_id = :space_id AND status = 'failed'", [{}]),
    ("space_id = :space_id AND NOT in_index", [{}]),
    *(
        (
            f"namespace = :namespace AND {column} = :value",
            [{"namespace": n, "value": v} for n in NAMESPACES for v in values if v is not None],
        )
        for column, values in (("user_id", USERS), ("agent_id", AGENTS), ("session_id", SESSIONS))
    ),
    ("tags && CAST(:tags AS text[])", [{"tags": [tag]} for tag in TAGS]),
    (
        "metadata @> CAST(:metadata AS jsonb)",
        [{"metadata": json.dumps({"topic": t})} for t in TOPICS],
    ),
    ("expires_at > now() - interval '1 day'", [{}]),
    (
        "content_tsv @@ plainto_tsquery('english', :word)",
        [{"word": word} for word in WORDS],
    ),
)
SEQUENTIAL_ONLY = {"enable_indexscan": "off", "enable_bitmapscan": "off", "enable_seqscan": "on"}
INDEXES_ONLY = {"enable_indexscan": "on", "enable_bitmapscan": "on", "enable_seqscan": "off"}


async def index_disagreements(conn: AsyncConnection, space_id: int, ids: list[UUID]) -> list[str]:
    """Every probe answered with indexes only and with a sequential scan only; each b-tree and
    GIN index of `memory` must serve some probe. Approximate (ANN) indexes are not exact,
    so they are not compared."""
    used: set[str] = set()
    found = []
    for predicate, parameter_sets in INDEX_PROBES:
        statement = f"SELECT id FROM memory WHERE {predicate}"
        for parameters in parameter_sets:
            params = {"ids": [*ids, uuid4()], "space_id": space_id, **parameters}
            by_index = await _probe(conn, statement, params, INDEXES_ONLY)
            plan = await conn.scalar(text(f"EXPLAIN (FORMAT JSON) {statement}"), params)
            used |= _index_names(json.loads(plan) if isinstance(plan, str) else plan)
            sequential = await _probe(conn, statement, params, SEQUENTIAL_ONLY)
            if by_index != sequential:
                found.append(f"  {predicate} {parameters}: {by_index} != {sequential}")
    exact = await conn.execute(
        text(
            "SELECT CAST(i.indexrelid AS regclass)::text FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = CAST('memory' AS regclass) AND a.amname IN ('btree', 'gin')"
        )
    )
    found += [f"  no probe uses {name}: add one" for name in set(exact.scalars()) - used]
    return found


async def _probe(
    conn: AsyncConnection, statement: str, params: dict[str, Any], settings: dict[str, str]
) -> list[UUID]:
    for name, value in settings.items():
        await set_local(conn, name, value)
    ids = list((await conn.execute(text(statement), params)).scalars())
    return ids if "ORDER BY" in statement else sorted(ids)


def _index_names(plan: Any) -> set[str]:
    if isinstance(plan, list):
        return set().union(*(_index_names(item) for item in plan))
    if isinstance(plan, dict):
        names = {plan["Index Name"]} if "Index Name" in plan else set()
        return names.union(*(_index_names(value) for value in plan.values()))
    return set()


class TestWriteConcurrency:
    async def test_colliding_writes_complete_and_survive_a_crash(
        self, own_server: OwnServer
    ) -> None:
        ledger = Ledger()
        engine = create_engine(own_server.database_url(), pool_size=WRITERS)
        try:
            space = await register_space(engine, "default", "test-model", DIMENSION, True)
            await run_load(own_server, engine, space.id, ledger, seed=1)
            # From here on the writers go through the space's diskann index too, built on the
            # rows of the first load, and the second load runs beside a rebuild of it.
            indexes = IndexMaintainer(engine=engine, space_id=space.id, policy=IndexPolicy(1, 2.0))
            assert (await indexes.maintain())["memory"] == "built"
            await assert_consistent(engine, space.id, ledger)
            before_crash = await row_digests(engine)
        finally:
            await engine.dispose()

        own_server.crash()
        own_server.start()

        engine = create_engine(own_server.database_url(), pool_size=WRITERS)
        try:
            assert await row_digests(engine) == before_crash, "the crash lost committed rows"
            indexes = IndexMaintainer(engine=engine, space_id=space.id, policy=IndexPolicy(1, 2.0))
            await indexes.request_rebuild("memory")
            async with asyncio.timeout(4 * DEADLINE_SECONDS):
                _, outcomes = await asyncio.gather(
                    run_load(own_server, engine, space.id, ledger, seed=2), indexes.maintain()
                )
            assert outcomes["memory"] == "rebuilt"
            await assert_consistent(engine, space.id, ledger)
            # Rows written while the rebuild ran waited outside it; once the writers stop,
            # a pass moves every one of them in.
            await indexes.drain("memory")
            async with engine.connect() as conn:
                assert await count_tail(conn, memory, space.id) == 0
        finally:
            await engine.dispose()
