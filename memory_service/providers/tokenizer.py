"""Token counting for chunking, and a tokenizer loaded from files alone for remote spaces.

Chunking (`documents.chunking`) must count tokens exactly as the space's model does, tens of
thousands of short texts per hundred documents, synchronously inside the chunker. A space
whose providers are all remote (vLLM, Ollama) has no model in this process. Two ways were
weighed:

- vLLM's `POST /tokenize` (`{"model", "prompt", "add_special_tokens"}` -> `{"count",
  "max_model_len", "tokens"}`) takes one prompt per request: chunking the PostgreSQL manual's
  120 pages would cost about 27,000 HTTP round trips (about 230 per document), each one a
  wait of the synchronous chunker; Ollama has no tokenize endpoint.
- The model's tokenizer files (`tokenizer.json`, a few hundred KB, beside the weights in
  every Hugging Face model folder) give the same counts in-process with no weights at all.

So a remote-only space chunks with `FileTokenizer`, loaded from the folder that
`MEMORY_TOKENIZER_PATH` names. The files must be the served model's: a tokenizer that
counts fewer tokens than the server would make chunks the server refuses, and those
documents are then reported failed (never truncated).
"""

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memory_service.core.errors import InvalidRequest
from memory_service.providers.embedding import CountTokens, T


def bare_counter(backend: Any) -> CountTokens:
    """Counts by a copy of a `tokenizers.Tokenizer` with truncation and padding off, special
    tokens included. A copy, because sentence-transformers switches truncation to the window
    on in the model's own instance, which would cap every count at the window."""
    from tokenizers import Tokenizer

    own = Tokenizer.from_str(backend.to_str())
    own.no_truncation()
    own.no_padding()

    def count(texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) for encoding in own.encode_batch(list(texts))]

    return count


def token_counter(tokenizer: Any) -> CountTokens:
    """Counts by a transformers tokenizer. A fast one is counted by its Rust tokenizer
    directly (`bare_counter`): transformers' call wraps each text's encoding in Python
    objects, which cost several times the tokenization on the many short texts chunking counts.
    The counts are the wrapper's, exactly."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return bare_counter(backend)

    def wrapped(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return wrapped


class FileTokenizer:
    """A model's tokenizer from its folder, without the model: a `Tokenizer` for chunking.

    Counting runs on the event loop's default executor. Its Rust tokenizer is this object's
    alone and is never reconfigured after `load`, so concurrent counts are safe (only a
    change of truncation or padding needs the tokenizer to itself), and it holds nothing to
    close.
    """

    def __init__(self, count: CountTokens, window: int, path: Path) -> None:
        self._count = count
        self.window = window
        self.path = path

    @classmethod
    def load(cls, path: Path) -> "FileTokenizer":
        """Read `path/tokenizer.json` and the model's window: `max_seq_length` of
        `sentence_bert_config.json` (what sentence-transformers embeds), else
        `model_max_length` of `tokenizer_config.json`. Raises InvalidRequest, naming what is
        missing, when either is."""
        file = path / "tokenizer.json"
        if not file.is_file():
            raise InvalidRequest(f"no tokenizer.json in {path}: name the model's folder")
        from tokenizers import Tokenizer

        return cls(bare_counter(Tokenizer.from_file(str(file))), _window(path), path)

    async def run_with_counter(self, work: Callable[[CountTokens], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, work, self._count)

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._count, list(texts))


def _window(path: Path) -> int:
    for name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        config = path / name
        if config.is_file():
            value = json.loads(config.read_text()).get(key)
            # transformers writes a huge sentinel for "no limit"; that is no window.
            if isinstance(value, int) and 0 < value < 1_000_000:
                return value
    raise InvalidRequest(
        f"{path} does not say the model's window: no max_seq_length in "
        "sentence_bert_config.json nor model_max_length in tokenizer_config.json"
    )
