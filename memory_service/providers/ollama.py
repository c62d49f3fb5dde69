"""The Ollama embedding client.

Wire format (Ollama `docs/api.md`, "Generate Embeddings"): `POST /api/embed {"model",
"input": [..], "truncate": false, "keep_alive"}` answers `{"model", "embeddings": [[..]]}`,
in input order and L2-normalized. `truncate: false` makes Ollama refuse input longer than
the model's context instead of cutting it. Errors are `{"error": "..."}`; a model that is
not pulled is a 404 `model "x" not found, try pulling it first`.

Servers older than `/api/embed` answer its route with gin's plain-text `404 page not found`;
this client then falls back, for good, to the legacy `POST /api/embeddings {"model",
"prompt"}` -> `{"embedding": [..]}`, one text per call, normalizing the vectors itself when
the space is normalized (the legacy route does not). The legacy route has no `truncate`
switch: such a server may cut long input, which is why it is only a fallback.

Probes: `GET /api/version` and `GET /api/tags`, which must list the model (`name` or
`name:latest`).
"""

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from memory_service.providers.embedding import EmbeddingClient, Vectors
from memory_service.providers.errors import ProviderBadResponse, ProviderModelNotFound
from memory_service.providers.http import raise_for_status, route_missing, send


class OllamaEmbeddings(EmbeddingClient):
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
        keep_alive: str = "5m",
    ) -> None:
        self.name = name
        self.model_id = served_model
        self.dimension = dimension
        self.normalized = normalized
        self.max_batch = max_batch
        self.window = None  # unknown here; `truncate: false` makes Ollama refuse
        self._root = base_url.rstrip("/")
        self._timeout = timeout
        self._http = http
        self._keep_alive = keep_alive
        self.legacy = False

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        if not self.legacy:
            response = await self._call(
                "POST",
                "/api/embed",
                {
                    "model": self.model_id,
                    "input": list(texts),
                    "truncate": False,
                    "keep_alive": self._keep_alive,
                },
            )
            if not route_missing(response):
                raise_for_status(self.name, response)
                return self._batch_vectors(response, len(texts))
            self.legacy = True
        return np.vstack([await self._legacy_one(text) for text in texts])

    def _batch_vectors(self, response: httpx.Response, count: int) -> Vectors:
        try:
            embeddings = response.json()["embeddings"]
            vectors = np.asarray(embeddings, dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderBadResponse(self.name, f"malformed /api/embed body: {exc!r}") from exc
        if vectors.ndim != 2 or len(vectors) != count:
            raise ProviderBadResponse(self.name, f"{len(embeddings)} embeddings for {count} inputs")
        return vectors

    async def _legacy_one(self, text: str) -> Vectors:
        response = await self._call(
            "POST", "/api/embeddings", {"model": self.model_id, "prompt": text}
        )
        raise_for_status(self.name, response)
        try:
            vector = np.asarray(response.json()["embedding"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderBadResponse(self.name, f"malformed legacy body: {exc!r}") from exc
        if self.normalized:
            norm = float(np.linalg.norm(vector))
            if norm == 0.0:
                raise ProviderBadResponse(self.name, "a zero vector cannot be normalized")
            vector = vector / norm
        return vector.reshape(1, -1)

    async def probe(self) -> None:
        version = await self._call("GET", "/api/version")
        raise_for_status(self.name, version)
        tags = await self._call("GET", "/api/tags")
        raise_for_status(self.name, tags)
        try:
            names = {model["name"] for model in tags.json()["models"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderBadResponse(self.name, f"malformed /api/tags body: {exc!r}") from exc
        if self.model_id not in names and f"{self.model_id}:latest" not in names:
            raise ProviderModelNotFound(self.name, f"has {sorted(names)}, not {self.model_id!r}")

    async def aclose(self) -> None:
        """Close the HTTP client it was given: the factory gives each provider its own."""
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> httpx.Response:
        return await send(
            self._http,
            self.name,
            method,
            f"{self._root}{path}",
            timeouts=self._timeout,
            payload=payload,
        )
