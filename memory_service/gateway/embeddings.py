"""OpenAI's `/v1/embeddings`, served through discovery with failover and space safety.

The service embeds one space, so a client may name that space's model, the space itself, or a
provider's served name for it; anything else is a 404 (`model_not_found`), never another
model's vectors. `dimensions` other than the space's is refused (400): vectors are never
truncated. Texts over the model's window are refused with the index of the first one, where
the model's tokenizer is local; a remote provider refuses them itself (its 4xx is relayed).
`base64` is OpenAI's encoding: the little-endian float32 bytes of each vector, base64-encoded.
"""

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memory_service.core.errors import (
    EmbedderUnavailable,
    InvalidRequest,
    NotFound,
    Overloaded,
    UpstreamRejected,
)
from memory_service.core.limits import at_most, within_window
from memory_service.core.settings import Limits
from memory_service.embeddings.port import Embedder
from memory_service.gateway.schemas import EmbeddingsRequest
from memory_service.providers.embedding import Vectors
from memory_service.providers.errors import (
    EmbedQueueFull,
    ProviderInputError,
    ProviderUnavailable,
)


@dataclass(frozen=True)
class EmbeddingsAnswer:
    body: dict[str, Any]
    provider: str


class EmbeddingsGateway:
    def __init__(
        self,
        embedder: Embedder,
        limits: Limits,
        served_names: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.embedder = embedder
        self.space = embedder.space
        self.limits = limits
        self._served_names = served_names

    @property
    def models(self) -> list[str]:
        """Read per request: providers (vLLM servers started later) may join at run time."""
        return list(dict.fromkeys([self.space.model, self.space.name, *self._served_names()]))

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsAnswer:
        texts = [request.input] if isinstance(request.input, str) else request.input
        self._check(request, texts)
        counts = await self.embedder.count_tokens(texts)
        if counts is not None:
            self._check_tokens(counts)
        try:
            embedding = await self.embedder.embed(texts)
        except ProviderInputError as exc:
            raise UpstreamRejected(str(exc), exc.status, {"index": exc.index}) from exc
        except EmbedQueueFull as exc:
            raise Overloaded(str(exc)) from exc
        except ProviderUnavailable as exc:
            raise EmbedderUnavailable(str(exc)) from exc
        # Counted by the model's own tokenizer where this process has it; 0 (not counted)
        # when only a remote server has it, rather than a made-up number.
        tokens = sum(counts) if counts is not None else 0
        return EmbeddingsAnswer(_body(request, embedding.vectors, tokens), embedding.provider)

    def _check(self, request: EmbeddingsRequest, texts: list[str]) -> None:
        if request.model not in self.models:
            raise NotFound(
                f"model {request.model!r} is not an embedding model of this service",
                {"models": self.models},
            )
        if request.dimensions is not None and request.dimensions != self.space.dimension:
            raise InvalidRequest(
                f"dimensions={request.dimensions}: {self.space.model} makes "
                f"{self.space.dimension}-dim vectors, and they are never truncated",
                {"dimension": self.space.dimension},
            )
        if not texts:
            raise InvalidRequest("input must hold at least one text")
        at_most("input", len(texts), self.limits.max_batch_items, "texts")
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequest(f"input[{index}] is empty", {"index": index})
            at_most("input", len(text), self.limits.max_content_chars, index=index)

    def _check_tokens(self, counts: list[int]) -> None:
        for index, count in enumerate(counts):
            within_window("input", count, self.embedder.window, self.space.model, index)


def _body(request: EmbeddingsRequest, vectors: Vectors, tokens: int) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, request)}
        for index, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: Vectors, request: EmbeddingsRequest) -> list[float] | str:
    if request.encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector.astype(np.float32)]
