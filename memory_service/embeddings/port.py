"""The embedder the domains call: one space, its token window, vectors and who made them.

Memories, search, documents and the `/v1/embeddings` gateway depend on this protocol only.
It is implemented by composition over provider clients (`providers.embedding`):
`RoutedEmbedder` ranks and fails over across the registry, `CoalescingEmbedder` batches
concurrent calls into one, and `ClientEmbedder` is one fixed client (the embedder tests
switch off).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.embedding import EmbeddingClient, Tokenizer, Vectors
from memory_service.providers.errors import ProviderInputError


@dataclass(frozen=True)
class Embedding:
    """`vectors` in the order of the texts, made by the provider named `provider`."""

    vectors: Vectors
    provider: str


class Embedder(Protocol):
    @property
    def space(self) -> EmbeddingSpace:
        """The space every vector belongs to."""
        ...

    @property
    def window(self) -> int | None:
        """The model's window in tokens, special tokens included; None when unknown here."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embedding:
        """Vectors for `texts`, in order; raise ProviderInputError (the input's fault, its
        `index` into `texts` when known) or ProviderUnavailable (nobody can serve now)."""
        ...

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens each text takes in the window; None when this process cannot count."""
        ...

    def tokenizer(self) -> Tokenizer | None:
        """The model's tokenizer when this process has it (chunking needs one)."""
        ...


class ClientEmbedder:
    """One client as the embedder, with no routing: the seam for a fixed embedder."""

    def __init__(self, client: EmbeddingClient, space: EmbeddingSpace) -> None:
        self.client = client
        self.space = space
        self.window = client.window

    async def embed(self, texts: Sequence[str]) -> Embedding:
        return Embedding(await self.client.embed(texts), self.client.name)

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return await self.client.count_tokens(texts)

    def tokenizer(self) -> Tokenizer | None:
        return self.client.tokenizer()


VectorOrRefusal = Vectors | ProviderInputError


async def embed_each(embedder: Embedder, texts: Sequence[str]) -> list[VectorOrRefusal]:
    """One outcome per text: its vector, or the error for a text the provider refuses.

    A refusal (a 4xx for the input) is narrowed down by halving the batch, so one bad text
    never costs the others their vectors. ProviderUnavailable propagates: nothing was refused,
    the provider is just not there.
    """
    if not texts:
        return []
    try:
        embedding = await embedder.embed(texts)
    except ProviderInputError as exc:
        if len(texts) == 1:
            return [exc]
        middle = len(texts) // 2
        return [
            *await embed_each(embedder, texts[:middle]),
            *await embed_each(embedder, texts[middle:]),
        ]
    return list(embedding.vectors)
