"""The Python client (`memory_service.client`) against a running `serve` with keys required.

The service runs on a PostgreSQL private to this module, so one test can crash it: the
client's retry is shown on a real 503 (`database_unavailable`, `Retry-After: 1`) that ends
when the database is back.
"""

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memory_service.client import (
    AsyncMemoryClient,
    BadRequest,
    Conflict,
    Forbidden,
    MemoryClient,
    NotFound,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from memory_service.documents.jobs.schemas import IngestJobIn
from memory_service.documents.schemas import DocumentFields, DocumentIn
from memory_service.memories.schemas import (
    MemoryBatchIn,
    MemoryFilters,
    MemoryForget,
    MemoryIn,
    MemoryPatch,
    MemorySearch,
)
from memory_service.search.schemas import SearchRequest
from tests.own_postgres import OwnServer, own_postgres
from tests.test_cli import clean_env, run, serving

pytestmark = pytest.mark.slow

NS = "client-tests"


@dataclass
class Served:
    url: str
    key: str  # every scope on client-*
    reader: str  # read on client-tests only
    database: OwnServer
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with contextlib.contextmanager(own_postgres)("memory-client-test-") as database:
        folder = tmp_path_factory.mktemp("client")
        env = clean_env(
            MEMORY_DATABASE_URL=database.database_url(),
            MEMORY_DATA_DIR=str(folder / "data"),
            MEMORY_AUTH="required",
        )
        keys = {}
        for name, scopes, pattern in (
            ("writer", ["read", "write", "metrics"], "client-*"),
            ("reader", ["read"], NS),
        ):
            arguments = ["keys", "create", "--name", name, "--namespace", pattern, "--json"]
            made = run([*arguments, *(f"--scope={scope}" for scope in scopes)], env)
            assert made.returncode == 0, made.stderr
            keys[name] = json.loads(made.stdout)["key"]
        log = folder / "serve.log"
        with serving(env, log) as url:
            yield Served(url, keys["writer"], keys["reader"], database, log)


def test_every_method_of_the_blocking_client(served: Served) -> None:
    with MemoryClient(served.url, api_key=served.key) as client:
        first = client.store(MemoryIn(namespace=NS, content="The boiler is serviced in May."))
        assert first.created and first.status == "embedded"
        assert not client.store(MemoryIn(namespace=NS, content=first.content)).created
        batch = client.store_batch(
            MemoryBatchIn(
                items=[
                    MemoryIn(namespace=NS, content=f"Plant {i} needs water.", tags=["plants"])
                    for i in range(6)
                ]
            )
        )
        assert [item.created for item in batch.items] == [True] * 6
        assert client.get_memory(first.id).content == first.content

        page = client.list_memories(NS, limit=3)
        assert len(page.items) == 3 and page.next_cursor is not None
        walked = [memory.id for memory in client.iter_memories(NS, page_size=3)]
        assert len(walked) == len(set(walked)) == 7
        assert set(walked) == {first.id, *(item.id for item in batch.items)}

        patched = client.update_memory(first.id, MemoryPatch(tags=["home"]))
        assert patched.tags == ["home"]
        hits = client.search_memories(MemorySearch(namespace=NS, query="heating maintenance"))
        assert hits.results[0].id == first.id

        document = client.add_document(
            DocumentIn(namespace=NS, text="The fire exit is behind the kitchen.", title="Safety")
        )
        assert document.status == "ingested" and document.chunks == 1
        mixed = client.search(SearchRequest(namespace=NS, query="where is the fire exit?"))
        assert mixed.results[0].source == "document" and mixed.results[0].title == "Safety"

        job = client.create_ingest_job(
            IngestJobIn(namespace=NS, documents=[DocumentFields(text="A job's document.")])
        )
        assert client.get_ingest_job(job.id).id == job.id
        assert job.id in {listed.id for listed in client.list_ingest_jobs(namespace=NS).items}
        assert [listed.id for listed in client.iter_ingest_jobs(page_size=1)] == [job.id]

        assert client.providers().best is not None
        assert [space.name for space in client.spaces().spaces] == ["default"]

        forgotten = client.forget(
            MemoryForget(namespace=NS, filters=MemoryFilters(tags_any=["plants"]))
        )
        assert forgotten.deleted == 6
        client.delete_memory(first.id)
        assert list(client.iter_memories(NS)) == []


async def test_the_async_client_sends_the_same_calls(served: Served) -> None:
    async with AsyncMemoryClient(served.url, api_key=served.key) as client:
        stored = [
            await client.store(MemoryIn(namespace="client-async", content=f"Async note {i}."))
            for i in range(5)
        ]
        walked = [memory.id async for memory in client.iter_memories("client-async", 2)]
        assert sorted(map(str, walked)) == sorted(str(memory.id) for memory in stored)
        found = await client.search_memories(
            MemorySearch(namespace="client-async", query="async note 3", k=1)
        )
        assert found.results[0].content == "Async note 3."
        deleted = await client.forget(MemoryForget(namespace="client-async"))
        assert deleted.deleted == 5
        with pytest.raises(NotFound):
            await client.get_memory(stored[0].id)


def test_error_answers_raise_the_exception_of_their_type(served: Served) -> None:
    with MemoryClient(served.url, api_key=served.key) as client:
        one = client.store(MemoryIn(namespace=NS, content="One content."))
        other = client.store(MemoryIn(namespace=NS, content="Another content."))
        with pytest.raises(Conflict) as conflict:
            client.update_memory(other.id, MemoryPatch(content="One content."))
        assert conflict.value.status == 409 and conflict.value.type == "conflict"
        with pytest.raises(NotFound):
            client.get_memory("00000000-0000-0000-0000-000000000000")
        with pytest.raises(ValueError):  # never sent: an id is a UUID
            client.delete_memory("../admin/keys/x")
        with pytest.raises(BadRequest) as bad_cursor:
            client.list_memories(NS, cursor="not-a-cursor")
        assert bad_cursor.value.status == 400
        with pytest.raises(Unprocessable) as no_page:
            client.list_memories(NS, limit=0)
        assert no_page.value.type == "validation_error" and no_page.value.message
        with pytest.raises(Forbidden) as elsewhere:
            client.list_memories("elsewhere")
        assert elsewhere.value.details == {"namespace": "elsewhere"}
        client.forget(MemoryForget(namespace=NS))
        with pytest.raises(NotFound):
            client.get_memory(one.id)
    with MemoryClient(served.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.list_memories(NS)
    with MemoryClient(served.url, api_key=served.reader) as reader, pytest.raises(Forbidden) as f:
        reader.store(MemoryIn(namespace=NS, content="A reader cannot write."))
    assert f.value.details == {"scope": "write"}


class _RestartOnRetry(logging.Handler):
    """Starts the database again when the client logs its first retry: the first answer is
    then surely the outage's 503, and the retries end once the database is back."""

    def __init__(self, database: OwnServer) -> None:
        super().__init__()
        self.database = database
        self.waits: list[float] = []
        self.restart: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.args, tuple) and isinstance(record.args[-1], float)
        self.waits.append(record.args[-1])  # the seconds it waits before the retry
        if self.restart is None:
            self.restart = threading.Thread(target=self.database.start)
            self.restart.start()


def test_a_503_is_retried_after_its_retry_after(served: Served) -> None:
    retries = _RestartOnRetry(served.database)
    logger = logging.getLogger("memory_service.client")
    logger.addHandler(retries)
    logger.setLevel(logging.INFO)
    try:
        with MemoryClient(served.url, api_key=served.key, max_retries=60) as client:
            served.database.crash()
            stored = client.store(MemoryIn(namespace=NS, content="Written after the outage."))
        assert stored.created
        # Each retry waited what the answer's Retry-After (1) asked.
        assert retries.waits and set(retries.waits) == {1.0}
    finally:
        logger.removeHandler(retries)
        if retries.restart is not None:
            retries.restart.join()
        served.database.start()
    with MemoryClient(served.url, api_key=served.key, max_retries=0) as client:
        served.database.crash()
        try:
            with pytest.raises(Unavailable) as unavailable:
                client.list_memories(NS)
        finally:
            served.database.start()
    assert unavailable.value.type == "database_unavailable"
