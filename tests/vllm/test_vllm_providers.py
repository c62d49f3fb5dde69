"""The `vllm` provider client, discovery and the service end to end, against a real vLLM.

The server is the session's `vllm_server` (all-MiniLM-L6-v2, 384-dim, 256-token window);
the local model is the session's `local_provider`, the same model run in-process. The dead
provider is a port bound but never listening, so connecting to it is refused at once and
nothing else can take the port while a test runs.
"""

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources, open_resources
from memory_service.core.settings import Settings
from memory_service.providers.embedding import Vectors
from memory_service.providers.errors import ProviderInputError, ProviderModelNotFound
from memory_service.providers.local import BUNDLED_MODEL_ID, LocalProvider
from memory_service.providers.openai import OpenAIEmbeddings
from memory_service.providers.registry import EmbedProvider, Registry
from tests.apps import http_app
from tests.memories.factories import memory_body

pytestmark = pytest.mark.vllm

DIMENSION = 384
SAME_MODEL_COSINE = 0.9999

SUBJECTS = ("Alice", "the deploy bot", "Dr. Müller", "our Berlin team", "a customer in Lyon")
FACTS = (
    "prefers dark mode in every editor",
    "moved the weekly sync to Thursday afternoon",
    "keeps backups of the database in a second region",
    "asked for invoices in euros, not dollars",
    "is allergic to peanuts — note it for the offsite",
    "plays the cello in a community orchestra",
    "rotates the API keys on the first Monday of the month",
    "wants release notes written in plain language",
    "uses PostgreSQL with pgvector for semantic search",
    "found that the nightly job fails when the disk is full",
)
# 100 texts in two batches of the client's 64; lengths from one word to a few dozen.
TEXTS = [
    *(f"{subject} {fact}." for subject in SUBJECTS for fact in FACTS),
    *(f"Note {i}: " + " ".join(FACTS[: 1 + i % len(FACTS)]) for i in range(44)),
    "ok",
    "",
    "Überprüfe die Konfiguration, bevor du den Dienst neu startest!",
    "user prefers dark mode; timezone Europe/Berlin; language: en-GB",
    "日本語のテキストも埋め込めます。",
    "x" * 200,
]

MEMORIES = (
    "Dave plays the cello in the city orchestra every Friday.",
    "The production database is backed up nightly to a bucket in Frankfurt.",
    "Maria is allergic to peanuts, so order the vegetarian menu for her.",
)
PARAPHRASE = ("which musical instrument does Dave play?", MEMORIES[0])


def row_cosines(a: Vectors, b: Vectors) -> Vectors:
    dots = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(dots / norms, dtype=np.float32)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def vllm_client(
    base_url: str, http: httpx.AsyncClient, served_model: str = BUNDLED_MODEL_ID
) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        name="vllm",
        base_url=base_url,
        served_model=served_model,
        dimension=DIMENSION,
        normalized=True,
        max_batch=64,
        timeout=httpx.Timeout(30, connect=2),
        http=http,
        has_health=True,
    )


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL whose port is bound and not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def providers_file(path: Path, *entries: str) -> Path:
    """A providers file of one space, `default`, served by `entries` (YAML list items)."""
    lines = ["spaces:", "  default: {model: all-MiniLM-L6-v2, dimension: 384}", "providers:"]
    path.write_text("\n".join([*lines, *entries]) + "\n")
    return path


def real_vllm(url: str) -> str:
    return (
        f'  - {{name: vllm, kind: vllm, base_url: "{url}", model: all-MiniLM-L6-v2,'
        " space: default, priority: 10, connect_timeout: 2.0, read_timeout: 30.0}"
    )


def dead_ollama(url: str) -> str:
    return (
        f'  - {{name: ollama, kind: ollama, base_url: "{url}", model: all-minilm,'
        " space: default, priority: 20, connect_timeout: 0.5, read_timeout: 1.0}"
    )


LOCAL = "  - {name: local, kind: local, space: default, priority: 100}"


def settings_for(database_url: str, providers: Path) -> Settings:
    """`providers` sits in the test's own folder, which also holds its data folder."""
    return Settings(
        database_url=database_url,
        data_dir=providers.parent / "data",
        providers_file=providers,
        reconciler=False,
        ingest_worker=False,
        probe_interval_seconds=3600,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path, vllm_server: str, refused_url: str) -> Settings:
    """The real vLLM (priority 10) and an Ollama that refuses connections (priority 20)."""
    path = providers_file(
        tmp_path / "providers.yaml", real_vllm(vllm_server), dead_ollama(refused_url)
    )
    return settings_for(database_url, path)


@pytest.fixture
async def resources(settings: Settings, local_provider: LocalProvider) -> AsyncIterator[Resources]:
    async with open_resources(settings, local=local_provider) as opened:
        yield opened


@pytest.fixture
async def client(settings: Settings, resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    async with http_app(settings, resources) as http:
        yield http


def discovery_of(resources: Resources) -> Registry[EmbedProvider]:
    """The embedding registry of resources opened over the configured providers."""
    assert resources.providers is not None
    return resources.providers.embed


async def reference_provider(resources: Resources) -> str | None:
    async with resources.engine.connect() as conn:
        captured = await conn.scalar(text("SELECT reference_provider FROM embedding_space"))
    return None if captured is None else str(captured)


async def store_memories(client: httpx.AsyncClient) -> list[str]:
    ids = []
    for content in MEMORIES:
        response = await client.post("/v1/memories", json=memory_body(content))
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "embedded"
        ids.append(str(response.json()["id"]))
    return ids


async def first_recalled(client: httpx.AsyncClient, query: str) -> str:
    search = await client.post(
        "/v1/memories/search", json={"namespace": "agent-1", "query": query, "k": 3}
    )
    assert search.status_code == 200, search.text
    results = search.json()["results"]
    assert len(results) == len(MEMORIES)
    return str(results[0]["content"])


class TestOpenAIEmbeddings:
    async def test_probe_passes(self, vllm_server: str, http: httpx.AsyncClient) -> None:
        await vllm_client(vllm_server, http).probe()

    async def test_embeddings_equal_the_local_model_in_order(
        self, vllm_server: str, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        client = vllm_client(vllm_server, http)
        remote = await client.embed(TEXTS)
        assert remote.shape == (len(TEXTS), DIMENSION)
        assert remote.dtype == np.float32
        assert client.base64, "vLLM accepts base64; the client must not fall back to floats"
        local = await local_provider.embed(TEXTS)
        cosines = row_cosines(remote, local)
        assert cosines.min() >= SAME_MODEL_COSINE, TEXTS[int(cosines.argmin())]

    async def test_an_unknown_served_model_is_model_not_found(
        self, vllm_server: str, http: httpx.AsyncClient
    ) -> None:
        client = vllm_client(vllm_server, http, served_model="nope")
        with pytest.raises(ProviderModelNotFound, match="not 'nope'"):
            await client.probe()
        with pytest.raises(ProviderModelNotFound, match="The model `nope` does not exist"):
            await client.embed(["hello"])

    async def test_an_over_long_text_is_an_input_error(
        self, vllm_server: str, http: httpx.AsyncClient
    ) -> None:
        client = vllm_client(vllm_server, http)
        with pytest.raises(ProviderInputError, match="maximum context length is 256 tokens"):
            await client.embed(["ok", " ".join(["word"] * 300)])
        assert client.base64, "an input error is not a reason to give up base64"


class TestDiscovery:
    async def test_the_real_vllm_is_best_and_the_dead_provider_is_not(
        self, resources: Resources
    ) -> None:
        discovery = discovery_of(resources)
        best = discovery.best()
        assert best is not None and best.name == "vllm"
        assert await reference_provider(resources) == "vllm"

    async def test_the_providers_endpoint(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/providers")
        assert response.status_code == 200
        body = response.json()
        assert body["best"] == "vllm"
        assert body["space"]["model"] == BUNDLED_MODEL_ID
        providers = {provider["name"]: provider for provider in body["providers"]}
        assert list(providers) == ["vllm", "ollama"]
        vllm, ollama = providers["vllm"], providers["ollama"]
        assert (vllm["eligible"], vllm["reason"], vllm["state"]) == (True, "eligible", "closed")
        assert vllm["parity"] == pytest.approx(1.0, abs=1e-5)
        assert vllm["latency_ms"] is not None and vllm["score"] is not None
        assert not ollama["eligible"]
        assert ollama["reason"].startswith("has not answered yet: ollama: cannot connect")
        assert ollama["parity"] is None and ollama["score"] is None

    async def test_memories_are_stored_and_recalled_through_vllm(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await store_memories(client)
        query, expected = PARAPHRASE
        assert await first_recalled(client, query) == expected
        status = {row.name: row for row in discovery_of(resources).status()}
        assert status["vllm"].consecutive_failures == 0
        assert status["vllm"].eligible, "live calls kept vLLM healthy"


class TestParity:
    async def test_the_local_model_is_at_parity_with_vllm(
        self,
        database_url: str,
        tmp_path: Path,
        vllm_server: str,
        local_provider: LocalProvider,
    ) -> None:
        path = providers_file(tmp_path / "providers.yaml", real_vllm(vllm_server), LOCAL)
        async with open_resources(settings_for(database_url, path), local=local_provider) as opened:
            status = {row.name: row for row in discovery_of(opened).status()}
            captured = await reference_provider(opened)
        assert captured == "vllm", "references come from the preferred provider"
        assert status["vllm"].eligible and status["local"].eligible
        parities = [status[name].details["parity"] for name in ("vllm", "local")]
        assert all(p is not None and p >= SAME_MODEL_COSINE for p in parities), parities

    async def test_memories_written_by_vllm_are_recalled_through_the_local_fallback(
        self,
        database_url: str,
        tmp_path: Path,
        vllm_server: str,
        local_provider: LocalProvider,
    ) -> None:
        """The same database opened twice: first with vLLM alone, then with the local model
        alone, which must pass parity against vLLM's references and search vLLM's vectors."""
        only_vllm = settings_for(
            database_url, providers_file(tmp_path / "vllm.yaml", real_vllm(vllm_server))
        )
        only_local = settings_for(database_url, providers_file(tmp_path / "local.yaml", LOCAL))
        async with (
            open_resources(only_vllm, local=local_provider) as opened,
            http_app(only_vllm, opened) as client,
        ):
            await store_memories(client)

        async with open_resources(only_local, local=local_provider) as opened:
            status = {row.name: row for row in discovery_of(opened).status()}
            assert status["local"].eligible, status["local"].reason
            assert status["local"].details["parity"] is not None
            assert status["local"].details["parity"] >= SAME_MODEL_COSINE
            assert await reference_provider(opened) == "vllm", "references are kept"
            async with http_app(only_local, opened) as client:
                query, expected = PARAPHRASE
                assert await first_recalled(client, query) == expected
