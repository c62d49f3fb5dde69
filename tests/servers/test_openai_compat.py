"""The loopback vLLM server answers exactly what vLLM 0.32 answers, over a real socket."""

import base64
import json
from typing import Any

import httpx
import numpy as np

from tests.servers import ModelFns, OpenAICompatServer
from tests.servers.vllm_wire import ENGINE_DEAD_MESSAGE

TEXTS = ["The cat sat on the mat.", "Vectors live in PostgreSQL.", "hello"]
LONG_IN_TOKENS = "word " * 300  # 302 tokens, 1,500 characters
CARD_KEYS = ["id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"]


def post(server: OpenAICompatServer, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=30, **kwargs)


def error(message: str, err_type: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


class TestOpenAICompatServer:
    def test_health_is_200_with_an_empty_body(self, vllm: OpenAICompatServer) -> None:
        response = httpx.get(f"{vllm.url}/health")

        assert (response.status_code, response.content) == (200, b"")

    def test_version_is_vllms(self, vllm: OpenAICompatServer) -> None:
        assert httpx.get(f"{vllm.url}/version").json() == {"version": "0.32.0"}

    def test_models_lists_a_vllm_model_card(self, vllm: OpenAICompatServer) -> None:
        listing = httpx.get(f"{vllm.url}/v1/models").json()

        [card] = listing["data"]
        assert listing["object"] == "list"
        assert list(card) == CARD_KEYS
        assert card["id"] == "all-MiniLM-L6-v2"
        assert (card["object"], card["owned_by"], card["parent"]) == ("model", "vllm", None)
        assert (card["root"], card["max_model_len"]) == ("/models/all-MiniLM-L6-v2", 256)
        assert card["permission"][0]["object"] == "model_permission"

    def test_float_embeddings_have_vllms_shape_and_the_real_vectors(
        self, vllm: OpenAICompatServer, model_fns: ModelFns
    ) -> None:
        answer = post(vllm, {"model": "all-MiniLM-L6-v2", "input": TEXTS}).json()

        assert list(answer) == ["id", "object", "created", "model", "data", "usage"]
        assert answer["id"].startswith("embd-") and isinstance(answer["created"], int)
        assert (answer["object"], answer["model"]) == ("list", "all-MiniLM-L6-v2")
        assert [list(item) for item in answer["data"]] == [["index", "object", "embedding"]] * 3
        assert [item["index"] for item in answer["data"]] == [0, 1, 2]
        assert {item["object"] for item in answer["data"]} == {"embedding"}
        vectors = np.array([item["embedding"] for item in answer["data"]], dtype=np.float32)
        np.testing.assert_allclose(vectors, model_fns.embed(TEXTS), atol=1e-6)
        tokens = sum(model_fns.count_tokens(TEXTS))
        assert answer["usage"] == {
            "prompt_tokens": tokens,
            "total_tokens": tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }

    def test_base64_decodes_to_the_same_floats(self, vllm: OpenAICompatServer) -> None:
        floats = post(vllm, {"input": TEXTS, "encoding_format": "float"}).json()["data"]
        encoded = post(vllm, {"input": TEXTS, "encoding_format": "base64"}).json()["data"]

        decoded = [np.frombuffer(base64.b64decode(i["embedding"]), "<f4") for i in encoded]
        expected = np.array([item["embedding"] for item in floats], dtype=np.float32)
        np.testing.assert_array_equal(np.stack(decoded), expected)

    def test_bytes_are_raw_float32_described_by_the_metadata_header(
        self, vllm: OpenAICompatServer
    ) -> None:
        floats = post(vllm, {"input": TEXTS}).json()["data"]
        response = post(vllm, {"input": TEXTS, "encoding_format": "bytes"})

        metadata = json.loads(response.headers["metadata"])
        assert response.headers["content-type"] == "application/octet-stream"
        assert [item["start"] for item in metadata["data"]] == [0, 1536, 3072]
        assert {item["embed_dtype"] for item in metadata["data"]} == {"float32"}
        decoded = np.frombuffer(response.content, "<f4").reshape(3, 384)
        expected = np.array([item["embedding"] for item in floats], dtype=np.float32)
        np.testing.assert_array_equal(decoded, expected)

    def test_a_string_input_and_a_request_id(self, vllm: OpenAICompatServer) -> None:
        answer = post(vllm, {"input": "hello"}, headers={"X-Request-Id": "probe-1"}).json()

        assert answer["id"] == "embd-probe-1"
        assert len(answer["data"]) == 1

    def test_an_unknown_model_is_404(self, vllm: OpenAICompatServer) -> None:
        response = post(vllm, {"model": "mxbai-embed-large", "input": "hello"})

        assert response.status_code == 404
        message = "The model `mxbai-embed-large` does not exist."
        assert response.json() == error(message, "NotFoundError", 404)

    def test_too_many_tokens_is_400(self, vllm: OpenAICompatServer) -> None:
        response = post(vllm, {"input": ["short", LONG_IN_TOKENS]})

        assert response.status_code == 400
        message = (
            "This model's maximum context length is 256 tokens. However, your prompt contains at "
            "least 257 input tokens, which exceeds this limit even without any output tokens. "
            "Please reduce the length of the input prompt. (parameter=input_tokens, value=257)"
        )
        assert response.json() == error(message, "BadRequestError", 400, "input_tokens")

    def test_too_many_characters_is_400_before_tokenizing(self, vllm: OpenAICompatServer) -> None:
        response = post(vllm, {"input": "x" * 5000})

        assert response.status_code == 400
        assert response.json()["error"]["param"] == "input_text"
        assert "contains 5000 characters (more than 4608 characters" in response.text

    def test_truncation_to_the_window_is_accepted(self, vllm: OpenAICompatServer) -> None:
        response = post(vllm, {"input": LONG_IN_TOKENS, "truncate_prompt_tokens": -1})

        assert response.status_code == 200
        assert response.json()["usage"]["prompt_tokens"] == 256

    def test_bad_requests_are_400(self, vllm: OpenAICompatServer) -> None:
        empty = post(vllm, {"input": []})
        dimensions = post(vllm, {"input": "hello", "dimensions": 100})

        assert empty.json() == error("You must pass at least one prompt", "BadRequestError", 400)
        message = (
            "Model 'all-MiniLM-L6-v2' does not support Matryoshka embeddings; dimensions must be "
            "unset (received dimensions=100)."
        )
        assert dimensions.json() == error(message, "BadRequestError", 400)

    def test_invalid_fields_are_validation_errors(self, vllm: OpenAICompatServer) -> None:
        response = post(vllm, {"input": "hello", "encoding_format": "int8"})

        assert response.status_code == 400
        body = response.json()["error"]
        assert (body["type"], body["param"], body["code"]) == (
            "Bad Request",
            "body.encoding_format",
            400,
        )
        assert body["message"].startswith("1 validation error:\n  {'type': 'literal_error'")

    def test_a_body_that_is_not_json_is_refused(self, vllm: OpenAICompatServer) -> None:
        wrong_type = httpx.post(
            f"{vllm.url}/v1/embeddings", content=b"{}", headers={"content-type": "text/plain"}
        )

        message = (
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"
        )
        assert wrong_type.json() == error(message, "Bad Request", 400)

    def test_unknown_routes_get_fastapis_404(self, vllm: OpenAICompatServer) -> None:
        response = httpx.get(f"{vllm.url}/v1/nothing")

        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})

    def test_error_500_is_a_dead_engine(self, vllm: OpenAICompatServer) -> None:
        vllm.faults.error_500()

        response = post(vllm, {"input": "hello"})

        assert response.status_code == 500
        assert response.json() == error(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)
        assert httpx.get(f"{vllm.url}/health").status_code == 503
        assert post(vllm, {"model": "other", "input": "hello"}).status_code == 404

    def test_no_base64_answers_like_vllm_0_4(self, vllm: OpenAICompatServer) -> None:
        vllm.faults.no_base64()

        refused = post(vllm, {"input": "hello", "encoding_format": "base64"})

        assert refused.status_code == 400
        assert refused.json() == {
            "object": "error",
            "message": "base64 encoding is not currently supported",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        assert post(vllm, {"input": "hello"}).status_code == 200

    def test_wrong_dimension_vectors_are_unit_and_short(self, vllm: OpenAICompatServer) -> None:
        vllm.faults.wrong_dimension(100)

        data = post(vllm, {"input": TEXTS}).json()["data"]

        vectors = np.array([item["embedding"] for item in data])
        assert vectors.shape == (3, 100)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    def test_other_model_vectors_are_unit_and_unlike_the_real_ones(
        self, vllm: OpenAICompatServer, model_fns: ModelFns
    ) -> None:
        vllm.faults.other_model()

        data = post(vllm, {"input": TEXTS}).json()["data"]

        vectors = np.array([item["embedding"] for item in data])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        cosines = np.sum(vectors * model_fns.embed(TEXTS), axis=1)
        assert np.all(np.abs(cosines) < 0.5)
