"""The vLLM / OpenAI-compatible client against a protocol-faithful server on a real socket."""

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from memory_service.providers.errors import (
    ProviderBadResponse,
    ProviderConnectError,
    ProviderInputError,
    ProviderModelNotFound,
    ProviderServerError,
    ProviderTimeout,
)
from memory_service.providers.local import LocalProvider
from memory_service.providers.openai import OpenAIEmbeddings
from tests.servers import OpenAICompatServer, RecordedRequest

TEXTS = [f"sentence {i} about {topic}" for i, topic in enumerate(["cats", "taxes", "rain"] * 7)]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def client_for(
    url: str, http: httpx.AsyncClient, *, model: str = "all-MiniLM-L6-v2", read: float = 10.0
) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        name="vllm-test",
        base_url=url,
        served_model=model,
        dimension=384,
        normalized=True,
        max_batch=8,
        timeout=httpx.Timeout(read, connect=1.0),
        http=http,
    )


def body(call: RecordedRequest) -> dict[str, Any]:
    assert isinstance(call.body, dict)
    return call.body


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TestOpenAIEmbeddings:
    async def test_batches_in_base64_and_matches_the_model(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        vectors = await client_for(vllm.url, http).embed(TEXTS)
        assert vectors.shape == (21, 384) and vectors.dtype == np.float32
        assert np.allclose(vectors, await local_provider.embed(TEXTS), atol=1e-5)
        calls = [body(call) for call in vllm.requests.matching("/v1/embeddings")]
        assert [len(call["input"]) for call in calls] == [8, 8, 5]
        assert {call["encoding_format"] for call in calls} == {"base64"}
        assert calls[0]["model"] == "all-MiniLM-L6-v2"

    async def test_items_are_placed_by_index_not_by_position(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        vllm.faults.shuffled()
        vectors = await client_for(vllm.url, http).embed(TEXTS[:5])
        assert np.allclose(vectors, await local_provider.embed(TEXTS[:5]), atol=1e-5)

    async def test_falls_back_to_floats_when_base64_is_refused(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        vllm.faults.no_base64()
        client = client_for(vllm.url, http)
        vectors = await client.embed(TEXTS[:3])
        assert np.allclose(vectors, await local_provider.embed(TEXTS[:3]), atol=1e-5)
        await client.embed(TEXTS[3:4])
        calls = vllm.requests.matching("/v1/embeddings")
        formats = [body(call).get("encoding_format") for call in calls]
        assert formats == ["base64", None, None], "asks in base64 once, then remembers"
        assert client.base64 is False

    async def test_unknown_model_is_model_not_found(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        with pytest.raises(ProviderModelNotFound, match="The model `mxbai` does not exist"):
            await client_for(vllm.url, http, model="mxbai").embed(["x"])

    async def test_overlong_input_is_an_input_error(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        with pytest.raises(ProviderInputError, match="maximum context length is 256"):
            await client_for(vllm.url, http).embed(["fine", "word " * 300])

    async def test_server_error(self, vllm: OpenAICompatServer, http: httpx.AsyncClient) -> None:
        vllm.faults.error_500()
        with pytest.raises(ProviderServerError, match="500"):
            await client_for(vllm.url, http).embed(["x"])

    async def test_slow_answer_past_the_read_timeout(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        vllm.faults.slow(2.0)
        with pytest.raises(ProviderTimeout):
            await client_for(vllm.url, http, read=0.2).embed(["x"])

    async def test_slow_answer_within_the_read_timeout(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        vllm.faults.slow(0.2)
        assert (await client_for(vllm.url, http, read=10).embed(["x"])).shape == (1, 384)

    async def test_hang(self, vllm: OpenAICompatServer, http: httpx.AsyncClient) -> None:
        vllm.faults.hang()
        with pytest.raises(ProviderTimeout):
            await client_for(vllm.url, http, read=0.3).embed(["x"])

    async def test_dropped_connection(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        vllm.faults.drop()
        with pytest.raises(ProviderServerError, match="dropped"):
            await client_for(vllm.url, http).embed(["x"])

    async def test_refused_connection(self, http: httpx.AsyncClient) -> None:
        with pytest.raises(ProviderConnectError):
            await client_for(f"http://127.0.0.1:{closed_port()}", http).embed(["x"])

    async def test_wrong_dimension_is_a_bad_response(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        vllm.faults.wrong_dimension(100)
        with pytest.raises(ProviderBadResponse, match=r"\(2, 100\)"):
            await client_for(vllm.url, http).embed(["a", "b"])

    async def test_probe_reads_health_at_the_root_and_the_model_list(
        self, vllm: OpenAICompatServer, http: httpx.AsyncClient
    ) -> None:
        await client_for(vllm.url, http).probe()
        assert [call.path for call in vllm.requests.all()] == ["/health", "/v1/models"]
        with pytest.raises(ProviderModelNotFound, match="not 'mxbai'"):
            await client_for(vllm.url, http, model="mxbai").probe()
        vllm.faults.error_500()
        with pytest.raises(ProviderServerError, match="503"):
            await client_for(vllm.url, http).probe()
