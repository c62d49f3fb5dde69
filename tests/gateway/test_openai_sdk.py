"""The official `openai` SDK, unmodified, against the gateway on a real socket."""

import base64
from collections.abc import AsyncIterator

import numpy as np
import openai
import pytest

from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings
from memory_service.providers.local import LocalProvider
from tests.apps import served_app
from tests.gateway.conftest import GROQ_MODEL, LOCAL_MODEL, ChatServers

TEXTS = ["pgvector stores embeddings", "the cat sat on the mat"]


@pytest.fixture
async def sdk(settings: Settings, resources: Resources) -> AsyncIterator[openai.AsyncOpenAI]:
    async with served_app(settings, resources) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        yield client
        await client.close()


class TestEmbeddings:
    @pytest.mark.parametrize("encoding", ["float", openai.NOT_GIVEN])
    async def test_vectors_are_the_models_own(
        self,
        sdk: openai.AsyncOpenAI,
        local_provider: LocalProvider,
        encoding: object,
    ) -> None:
        """Not given, the SDK asks for base64 and decodes it itself."""
        response = await sdk.embeddings.create(
            model="all-MiniLM-L6-v2",
            input=TEXTS,
            encoding_format=encoding,  # type: ignore[arg-type]
        )
        expected = await local_provider.embed(TEXTS)
        got = np.array([item.embedding for item in response.data], dtype=np.float32)
        assert got.shape == (2, 384)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert response.usage.prompt_tokens > 0

    async def test_explicit_base64_is_little_endian_float32(
        self, sdk: openai.AsyncOpenAI, local_provider: LocalProvider
    ) -> None:
        response = await sdk.embeddings.create(
            model="default", input=TEXTS[0], encoding_format="base64"
        )
        encoded = response.data[0].embedding
        assert isinstance(encoded, str)
        decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
        np.testing.assert_allclose(decoded, (await local_provider.embed(TEXTS[:1]))[0], atol=0)

    async def test_another_model_or_dimension_is_refused(self, sdk: openai.AsyncOpenAI) -> None:
        with pytest.raises(openai.NotFoundError):
            await sdk.embeddings.create(model="text-embedding-3-small", input="x")
        with pytest.raises(openai.BadRequestError, match="never truncated"):
            await sdk.embeddings.create(model="default", input="x", dimensions=128)


class TestChat:
    async def test_a_completion_with_the_routing_headers(
        self, sdk: openai.AsyncOpenAI, chat_servers: ChatServers
    ) -> None:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello sdk"}]
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == f"Reply from {LOCAL_MODEL} to: hello sdk"
        assert completion.usage is not None and completion.usage.total_tokens > 0
        assert raw.headers["x-memory-provider"] == "vllm-chat"

    async def test_a_stream(self, sdk: openai.AsyncOpenAI, chat_servers: ChatServers) -> None:
        stream = await sdk.chat.completions.create(
            model=GROQ_MODEL,
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        async for chunk in stream:
            parts.extend(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
        assert "".join(parts) == f"Reply from {GROQ_MODEL} to: stream please"
        assert usage is not None and usage.total_tokens > 0

    async def test_a_failure_mid_stream_raises_in_the_sdk(
        self, sdk: openai.AsyncOpenAI, chat_servers: ChatServers
    ) -> None:
        chat_servers.vllm.faults.stream_break()
        stream = await sdk.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "break"}], stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="failed mid-stream"):
            async for chunk in stream:
                received.extend(choice.delta.content or "" for choice in chunk.choices)
        assert "".join(received) == "Reply from"

    async def test_models_lists_the_aliases(self, sdk: openai.AsyncOpenAI) -> None:
        ids = [model.id async for model in sdk.models.list()]
        assert {"auto", "fast", LOCAL_MODEL, GROQ_MODEL, "all-MiniLM-L6-v2"} <= set(ids)

    async def test_a_client_error_is_the_sdks_bad_request(
        self, sdk: openai.AsyncOpenAI, chat_servers: ChatServers
    ) -> None:
        with pytest.raises(openai.BadRequestError, match="temperature"):
            await sdk.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "x"}], temperature=2.5
            )
