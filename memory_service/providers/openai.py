"""The vLLM / OpenAI-compatible embedding client (also TEI, infinity and OpenAI itself).

Wire format (OpenAI API reference, "Create embeddings"; vLLM
`vllm/entrypoints/openai/protocol.py` EmbeddingRequest/EmbeddingResponse):
`POST {root}/v1/embeddings {"model", "input": [..], "encoding_format": "base64"}` answers
`{"data": [{"index": i, "embedding": <base64 of little-endian float32> | [floats]}], ...}`.
Base64 is a quarter of the JSON size and decodes with numpy in one call; a server that
rejects it (4xx naming `encoding_format` or base64) is asked again with floats, and this
client remembers that. Items are placed by `index`, never by position.

Probes: `GET {root}/health` (vLLM serves it at the server root, not under /v1) and
`GET {root}/v1/models`, which must list the served model name.
"""

import base64
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from memory_service.providers.embedding import EmbeddingClient, Vectors
from memory_service.providers.errors import ProviderBadResponse, ProviderModelNotFound
from memory_service.providers.http import raise_for_status, send


class OpenAIEmbeddings(EmbeddingClient):
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        served_model: str,
        dimension: int,
        normalized: bool,
        max_batch: int,
        timeout: httpx.Timeout,
        http: httpx.AsyncClient,
        api_key: str | None = None,
        has_health: bool = True,
    ) -> None:
        self.name = name
        self.model_id = served_model
        self.dimension = dimension
        self.normalized = normalized
        self.max_batch = max_batch
        self.window = None  # unknown here; the server rejects over-long input
        self._root = base_url.rstrip("/")
        self._timeout = timeout
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._has_health = has_health
        self.base64 = True

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        response = await self._post(texts)
        if self.base64 and _rejects_base64(response):
            self.base64 = False
            response = await self._post(texts)
        raise_for_status(self.name, response)
        return self._vectors(response, len(texts))

    async def _post(self, texts: Sequence[str]) -> httpx.Response:
        payload: dict[str, Any] = {"model": self.model_id, "input": list(texts)}
        if self.base64:
            payload["encoding_format"] = "base64"
        return await send(
            self._http,
            self.name,
            "POST",
            f"{self._root}/v1/embeddings",
            timeouts=self._timeout,
            payload=payload,
            headers=self._headers,
        )

    def _vectors(self, response: httpx.Response, count: int) -> Vectors:
        try:
            data = response.json()["data"]
            rows: list[Any] = [None] * count
            for item in data:
                index = item["index"]
                if not 0 <= index < count or rows[index] is not None:
                    raise ProviderBadResponse(self.name, f"index {index} out of place")
                rows[index] = _decode(item["embedding"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderBadResponse(self.name, f"malformed embeddings body: {exc!r}") from exc
        if any(row is None for row in rows):
            raise ProviderBadResponse(self.name, f"{len(data)} embeddings for {count} inputs")
        try:
            return np.vstack(rows).astype(np.float32, copy=False)
        except ValueError as exc:
            raise ProviderBadResponse(self.name, f"embeddings of unequal length: {exc}") from exc

    async def probe(self) -> None:
        if self._has_health:
            health = await self._get("/health")
            raise_for_status(self.name, health)
        models = await self._get("/v1/models")
        raise_for_status(self.name, models)
        try:
            served = {card["id"] for card in models.json()["data"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderBadResponse(self.name, f"malformed /v1/models body: {exc!r}") from exc
        if self.model_id not in served:
            raise ProviderModelNotFound(
                self.name, f"serves {sorted(served)}, not {self.model_id!r}"
            )

    async def aclose(self) -> None:
        """Close the HTTP client it was given: the factory gives each provider its own."""
        await self._http.aclose()

    async def _get(self, path: str) -> httpx.Response:
        return await send(
            self._http,
            self.name,
            "GET",
            f"{self._root}{path}",
            timeouts=self._timeout,
            headers=self._headers,
        )


def _decode(embedding: Any) -> Vectors:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def _rejects_base64(response: httpx.Response) -> bool:
    if response.status_code not in (400, 422):
        return False
    text = response.text.lower()
    return "encoding_format" in text or "base64" in text
