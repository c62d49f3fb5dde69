"""Request bodies of the OpenAI-compatible gateway.

Chat requests are validated only as far as routing needs (model, messages, sizes, our own
`memory` field); every other OpenAI parameter (temperature, tools, response_format, ...) is
passed through to the provider untouched, so the gateway never narrows what clients can ask.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memory_service.memories.schemas import MemoryFilters, Namespace


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class MemoryContext(BaseModel):
    """Recall memories of `namespace` and give them to the model. The recall query is `query`,
    or else the last user message; a query longer than the embedding model takes is refused
    (422 naming `memory.query`), never cut."""

    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    query: str | None = Field(None, min_length=1)
    k: int = Field(5, ge=1, le=50)
    filters: MemoryFilters = Field(default_factory=MemoryFilters)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, Any] | None = None
    memory: MemoryContext | None = None


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request. Token-id input is refused: it is only meaningful for the
    tokenizer of the model that made the ids, and the gateway may route to another server."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
