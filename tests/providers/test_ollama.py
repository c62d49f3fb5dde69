"""The Ollama client against a protocol-faithful server on a real socket."""

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from memory_service.providers.errors import (
    ProviderBadResponse,
    ProviderInputError,
    ProviderModelNotFound,
    ProviderServerError,
    ProviderTimeout,
)
from memory_service.providers.local import LocalProvider
from memory_service.providers.ollama import OllamaEmbeddings
from tests.servers import OllamaServer

TEXTS = ["the cat sleeps", "taxes are due in April", "it will rain tomorrow", "hello"]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def client_for(
    url: str, http: httpx.AsyncClient, *, model: str = "all-minilm", read: float = 10.0
) -> OllamaEmbeddings:
    return OllamaEmbeddings(
        name="ollama-test",
        base_url=url,
        served_model=model,
        dimension=384,
        normalized=True,
        max_batch=3,
        timeout=httpx.Timeout(read, connect=1.0),
        http=http,
        keep_alive="1m",
    )


class TestOllamaEmbeddings:
    async def test_batches_through_api_embed(
        self, ollama: OllamaServer, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        vectors = await client_for(ollama.url, http).embed(TEXTS)
        assert np.allclose(vectors, await local_provider.embed(TEXTS), atol=1e-5)
        calls = ollama.requests.matching("/api/embed")
        assert [call.body for call in calls] == [
            {"model": "all-minilm", "input": TEXTS[:3], "truncate": False, "keep_alive": "1m"},
            {"model": "all-minilm", "input": TEXTS[3:], "truncate": False, "keep_alive": "1m"},
        ]

    async def test_falls_back_to_the_legacy_route_when_api_embed_is_missing(
        self, ollama: OllamaServer, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        ollama.faults.legacy_only()
        client = client_for(ollama.url, http)
        vectors = await client.embed(TEXTS[:2])
        assert client.legacy is True
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.allclose(vectors, await local_provider.embed(TEXTS[:2]), atol=1e-5)
        legacy = ollama.requests.matching("/api/embeddings")
        assert [call.body for call in legacy] == [
            {"model": "all-minilm", "prompt": TEXTS[0]},
            {"model": "all-minilm", "prompt": TEXTS[1]},
        ]
        await client.embed(["again"])
        assert ollama.requests.count("/api/embed") == 1, "the missing route is asked once"

    async def test_a_model_that_is_not_pulled(
        self, ollama: OllamaServer, http: httpx.AsyncClient
    ) -> None:
        with pytest.raises(ProviderModelNotFound, match="try pulling it first"):
            await client_for(ollama.url, http, model="mxbai-embed-large").embed(["x"])

    async def test_overlong_input_is_refused_not_truncated(
        self, ollama: OllamaServer, http: httpx.AsyncClient
    ) -> None:
        with pytest.raises(ProviderInputError, match="context length"):
            await client_for(ollama.url, http).embed(["word " * 400])

    async def test_transport_and_server_faults(
        self, ollama: OllamaServer, http: httpx.AsyncClient
    ) -> None:
        ollama.faults.error_500()
        with pytest.raises(ProviderServerError, match="500"):
            await client_for(ollama.url, http).embed(["x"])
        ollama.faults.hang()
        with pytest.raises(ProviderTimeout):
            await client_for(ollama.url, http, read=0.3).embed(["x"])
        ollama.faults.drop()
        with pytest.raises(ProviderServerError, match="dropped"):
            await client_for(ollama.url, http).embed(["x"])
        ollama.faults.wrong_dimension(50)
        with pytest.raises(ProviderBadResponse):
            await client_for(ollama.url, http).embed(["x"])

    async def test_probe_checks_version_and_tags(
        self, ollama: OllamaServer, http: httpx.AsyncClient
    ) -> None:
        await client_for(ollama.url, http).probe()
        await client_for(ollama.url, http, model="all-minilm:latest").probe()
        assert [call.path for call in ollama.requests.all()][:2] == ["/api/version", "/api/tags"]
        with pytest.raises(ProviderModelNotFound, match="not 'nomic'"):
            await client_for(ollama.url, http, model="nomic").probe()
