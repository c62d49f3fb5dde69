"""Alembic entry points used by the CLI, `serve` and the tests.

The migrations ship inside the package (`memory_service/migrations`, package data), so an
installed wheel migrates as a source checkout does; the configuration is built here, not
read from a file. `alembic.ini` at the top of the repository points plain `alembic`
commands at the same folder. `create_index_concurrently` is shared by the revisions that
build indexes concurrently.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

SCRIPT_LOCATION = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """The Alembic config; `database_url` (an async psycopg URL) is the database to
    migrate (else migrations/env.py reads MEMORY_DATABASE_URL)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        # configparser interpolates `%`; percent-encoded URLs need it doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Blocking; safe to call from async code too."""
    _outside_event_loop(command.upgrade, alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    _outside_event_loop(command.downgrade, alembic_config(database_url), revision)


def _outside_event_loop(
    action: Callable[[Config, str], None], config: Config, revision: str
) -> None:
    """migrations/env.py runs its own event loop (`asyncio.run`), which cannot start inside a
    running one; from async code the migration therefore runs on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        action(config, revision)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        pool.submit(action, config, revision).result()


def create_index_concurrently(name: str, table: str, columns: list[str], **kw: Any) -> None:
    """`CREATE INDEX CONCURRENTLY IF NOT EXISTS`, retryable: a concurrent build that failed
    (a cancelled or crashed upgrade) leaves an INVALID index behind, unused but maintained
    on every write, which `IF NOT EXISTS` would keep. That one is dropped and built again;
    a valid one is kept. Run inside the revision's `autocommit_block()`. Offline
    (`alembic upgrade --sql`) there is no database to look at: only the CREATE is written."""
    if not op.get_context().as_sql:
        invalid = op.get_bind().execute(
            text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": name},
        )
        if invalid.scalar():
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
    op.create_index(name, table, columns, postgresql_concurrently=True, if_not_exists=True, **kw)
