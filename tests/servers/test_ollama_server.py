"""The loopback Ollama server answers exactly what Ollama answers, over a real socket."""

from typing import Any

import httpx
import numpy as np

from tests.servers import ModelFns, OllamaServer
from tests.servers.embedder import unit_rows

TEXTS = ["The cat sat on the mat.", "Vectors live in PostgreSQL.", "hello"]
LONG_IN_TOKENS = "word " * 300  # 302 tokens
EMBED_KEYS = ["model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"]
TAG_KEYS = ["name", "model", "modified_at", "size", "digest", "details"]
DETAIL_KEYS = [
    "parent_model",
    "format",
    "family",
    "families",
    "parameter_size",
    "quantization_level",
]


def embed(server: OllamaServer, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/embed", json=body, timeout=30)


def legacy(server: OllamaServer, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/embeddings", json=body, timeout=30)


class TestOllamaServer:
    def test_root_says_ollama_is_running(self, ollama: OllamaServer) -> None:
        response = httpx.get(f"{ollama.url}/")

        assert (response.status_code, response.text) == (200, "Ollama is running")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert httpx.head(f"{ollama.url}/").status_code == 200

    def test_version(self, ollama: OllamaServer) -> None:
        assert httpx.get(f"{ollama.url}/api/version").json() == {"version": "0.21.0"}

    def test_tags_list_the_pulled_models(self, ollama: OllamaServer) -> None:
        response = httpx.get(f"{ollama.url}/api/tags")

        [model] = response.json()["models"]
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert list(model) == TAG_KEYS and list(model["details"]) == DETAIL_KEYS
        assert (model["name"], model["model"]) == ("all-minilm:latest", "all-minilm:latest")
        assert model["modified_at"].endswith("Z") and len(model["digest"]) == 64
        assert (model["details"]["family"], model["details"]["format"]) == ("bert", "gguf")

    def test_embed_returns_the_real_vectors_normalized(
        self, ollama: OllamaServer, model_fns: ModelFns
    ) -> None:
        answer = embed(ollama, {"model": "all-minilm", "input": TEXTS}).json()

        assert list(answer) == EMBED_KEYS
        assert answer["model"] == "all-minilm"
        assert answer["prompt_eval_count"] == sum(model_fns.count_tokens(TEXTS))
        assert answer["total_duration"] >= answer["load_duration"] > 0
        vectors = np.array(answer["embeddings"], dtype=np.float32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(vectors, unit_rows(model_fns.embed(TEXTS)), atol=1e-6)

    def test_embed_takes_one_string_and_cuts_dimensions(self, ollama: OllamaServer) -> None:
        answer = embed(ollama, {"model": "all-minilm:latest", "input": "hello", "dimensions": 64})

        [vector] = answer.json()["embeddings"]
        assert len(vector) == 64
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-6

    def test_empty_input_returns_no_embeddings(self, ollama: OllamaServer) -> None:
        empties: tuple[Any, ...] = ("", [], None)
        for empty in empties:
            answer = embed(ollama, {"model": "all-minilm", "input": empty})

            assert answer.json() == {"model": "all-minilm", "embeddings": []}

    def test_a_model_not_pulled_is_404(self, ollama: OllamaServer) -> None:
        for response in (
            embed(ollama, {"model": "mxbai-embed-large", "input": "hello"}),
            legacy(ollama, {"model": "mxbai-embed-large", "prompt": "hello"}),
        ):
            assert response.status_code == 404
            message = 'model "mxbai-embed-large" not found, try pulling it first'
            assert response.json() == {"error": message}

    def test_too_long_without_truncation_is_400(self, ollama: OllamaServer) -> None:
        refused = embed(ollama, {"model": "all-minilm", "input": LONG_IN_TOKENS, "truncate": False})
        truncated = embed(ollama, {"model": "all-minilm", "input": LONG_IN_TOKENS})

        assert refused.status_code == 400
        assert refused.json() == {"error": "the input length exceeds the context length"}
        assert truncated.status_code == 200
        assert truncated.json()["prompt_eval_count"] == 256

    def test_malformed_requests_are_400(self, ollama: OllamaServer) -> None:
        url = f"{ollama.url}/api/embed"

        assert embed(ollama, {"model": "all-minilm", "input": [1]}).json() == {
            "error": "invalid input type"
        }
        assert httpx.post(url, content=b"").json() == {"error": "missing request body"}
        assert httpx.post(url, content=b"{").status_code == 400
        mistyped = embed(ollama, {"model": "all-minilm", "input": "x", "truncate": "no"})
        assert mistyped.json() == {
            "error": "json: cannot unmarshal string into Go struct field EmbedRequest.truncate "
            "of type bool"
        }

    def test_legacy_embeddings(self, ollama: OllamaServer, model_fns: ModelFns) -> None:
        answer = legacy(ollama, {"model": "all-minilm", "prompt": "hello"}).json()

        assert list(answer) == ["embedding"]
        np.testing.assert_allclose(answer["embedding"], model_fns.embed(["hello"])[0], atol=1e-7)
        assert legacy(ollama, {"model": "all-minilm", "prompt": ""}).json() == {"embedding": []}
        required = legacy(ollama, {"prompt": "hello"})
        assert (required.status_code, required.json()) == (400, {"error": "model is required"})

    def test_unknown_routes_get_gins_plain_404(self, ollama: OllamaServer) -> None:
        missing = httpx.get(f"{ollama.url}/api/nothing")
        wrong_method = httpx.get(f"{ollama.url}/api/embed")

        assert (missing.status_code, missing.text) == (404, "404 page not found")
        assert missing.headers["content-type"] == "text/plain"
        assert (wrong_method.status_code, wrong_method.text) == (405, "405 method not allowed")

    def test_error_500_is_a_terminated_runner(self, ollama: OllamaServer) -> None:
        ollama.faults.error_500()

        response = embed(ollama, {"model": "all-minilm", "input": "hello"})

        assert response.status_code == 500
        error = "llama runner process has terminated: exit status 2"
        assert response.json() == {"error": error}
        assert legacy(ollama, {"model": "all-minilm", "prompt": "hello"}).status_code == 500
        assert httpx.get(f"{ollama.url}/api/tags").status_code == 200

    def test_legacy_only_has_no_api_embed(self, ollama: OllamaServer) -> None:
        ollama.faults.legacy_only()

        missing = embed(ollama, {"model": "all-minilm", "input": "hello"})

        assert (missing.status_code, missing.text) == (404, "404 page not found")
        assert legacy(ollama, {"model": "all-minilm", "prompt": "hello"}).status_code == 200

    def test_vector_faults(self, ollama: OllamaServer, model_fns: ModelFns) -> None:
        ollama.faults.wrong_dimension(100)
        short = embed(ollama, {"model": "all-minilm", "input": TEXTS}).json()["embeddings"]
        ollama.faults.other_model()
        other = embed(ollama, {"model": "all-minilm", "input": TEXTS}).json()["embeddings"]

        assert {len(vector) for vector in short} == {100}
        np.testing.assert_allclose(np.linalg.norm(other, axis=1), 1.0, atol=1e-5)
        cosines = np.sum(np.array(other) * unit_rows(model_fns.embed(TEXTS)), axis=1)
        assert np.all(np.abs(cosines) < 0.5)
