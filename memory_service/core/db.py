"""The async engine (SQLAlchemy 2 on psycopg 3) and the schema-version check."""

import json
import traceback
from typing import Any

import psycopg
from sqlalchemy import ClauseElement, Executable, Row, Select, text
from sqlalchemy.exc import ProgrammingError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler

from memory_service.core.errors import StartupError
from memory_service.core.migrations import head_revision

# A result row of any columns (SQLAlchemy's Row is generic over its column types).
AnyRow = Row[*tuple[Any, ...]]


class CheckoutCountingPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's pool for asyncio engines, counting the checkouts under way (`checkouts`):
    callers waiting for a free connection, or for a new one to connect. `/metrics` reports
    it; past `pool_size + max_overflow` in use, it is the queue for the database.
    `_do_get` is the hook a Pool subclass implements for a checkout (sqlalchemy.pool.base)."""

    checkouts = 0
    # SQLAlchemy names a pool's logger after its class's module; this keeps the name of the
    # pool it extends, so its lines stay under `sqlalchemy` (warnings only by default).
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def _do_get(self) -> ConnectionPoolEntry:
        self.checkouts += 1
        try:
            return super()._do_get()
        finally:
            self.checkouts -= 1


def create_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout_seconds: float = 30.0,
    statement_timeout_ms: int = 0,
    lock_timeout_ms: int = 0,
) -> AsyncEngine:
    """Build the engine. Created in the app lifespan or a CLI command, disposed there.

    `plan_cache_mode=force_custom_plan` makes PostgreSQL plan every statement with its real
    parameter values: the per-space vector indexes are partial (`WHERE space_id = n`), and a
    generic plan of a prepared statement could not prove that predicate and would skip them.

    `hide_parameters` keeps bound values (users' memories, documents' metadata) out of every
    error message and log line SQLAlchemy writes.

    The timeouts (0: none) bound what a stuck database can cost a request: a statement or a
    lock wait past them fails, and a request that finds no free connection within
    `pool_timeout_seconds` fails; the error handler answers all three with a 503
    (`core/handlers.py`). They cannot bound a wait inside an extension's LWLock, which
    ignores cancellation: that is why no write path runs through such an extension (migration
    0007).
    """
    options = (
        "-c plan_cache_mode=force_custom_plan "
        f"-c statement_timeout={int(statement_timeout_ms)} -c lock_timeout={int(lock_timeout_ms)}"
    )
    return create_async_engine(
        database_url,
        poolclass=CheckoutCountingPool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_seconds,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"options": options},
    )


def failure_text(exc: BaseException) -> str:
    """What failed and where, for a log line, without the data it failed on.

    A database error's text carries what was written: SQLAlchemy adds the statement, and
    PostgreSQL's own message (its DETAIL and CONTEXT) quotes the offending values, as in
    `JSON data, line 1: {"ssn": ...`. Such errors are named by class and SQLSTATE only;
    other exceptions keep their message. The stack follows, as a traceback would show it.
    """
    causes: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = f"{type(current).__module__}.{type(current).__qualname__}"
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(current, StatementError | psycopg.Error):
            causes.append(name + (f" (SQLSTATE {sqlstate})" if sqlstate else ""))
        else:
            causes.append(f"{name}: {current}")
        current = current.__cause__ or current.__context__
    stack = "".join(traceback.format_tb(exc.__traceback__))
    return "; from ".join(causes) + "\n" + stack.rstrip()


async def set_local(conn: AsyncConnection, name: str, value: str) -> None:
    """`SET LOCAL name = value` with a bound value: for the rest of this transaction only."""
    await conn.execute(
        text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
    )


class _ExplainJson(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON)` of a statement, with its bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(_ExplainJson, "postgresql")
def _compile_explain(element: _ExplainJson, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


async def estimated_rows(conn: AsyncConnection, statement: Select[Any]) -> float:
    """The planner's estimate of the rows `statement` returns (one round trip, no execution)."""
    plan = (await conn.execute(_ExplainJson(statement))).scalar_one()
    document = json.loads(plan) if isinstance(plan, str) else plan
    return float(document[0]["Plan"]["Plan Rows"])


async def ping(engine: AsyncEngine) -> None:
    """One round trip; raises when the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at; None for an empty database."""
    async with engine.connect() as conn:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except ProgrammingError:
            return None
    return None if row is None else str(row[0])


async def ensure_schema_at_head(engine: AsyncEngine) -> None:
    """Refuse to run against a schema that migrations have not brought to head."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise StartupError(
            f"database schema is at revision {current or '<empty>'}, the service needs {head}: "
            "run `memory-service db upgrade` (with the same MEMORY_DATABASE_URL) first"
        )
