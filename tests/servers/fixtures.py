"""Fixtures (a plugin of tests/conftest.py): the real model once per session, one server of
each kind per module.

The model callables reuse the session's `local_provider` (tests/conftest.py) and run on its
model thread, so the weights load once and its tokenizer never runs on two threads.
Each test gets the module's server healed (`faults.ok()`) and with an empty request log.
"""

from collections.abc import Iterator

import pytest

from memory_service.providers.local import LocalProvider
from tests.servers import (
    ModelFns,
    OllamaServer,
    OpenAICompatServer,
    embedder_from_model,
    max_chars_per_token,
)


@pytest.fixture(scope="session")
def model_fns(local_provider: LocalProvider) -> ModelFns:
    return embedder_from_model(local_provider._model, run_on=local_provider._worker)


@pytest.fixture(scope="session")
def vocab_max_chars(local_provider: LocalProvider) -> int:
    return max_chars_per_token(local_provider._model)


@pytest.fixture(scope="module")
def vllm_server(model_fns: ModelFns, vocab_max_chars: int) -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(
        model_fns.embed,
        tokenizer_count=model_fns.count_tokens,
        max_chars_per_token=vocab_max_chars,
        model_root="/models/all-MiniLM-L6-v2",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def ollama_server(model_fns: ModelFns) -> Iterator[OllamaServer]:
    with OllamaServer(model_fns.embed, tokenizer_count=model_fns.count_tokens) as server:
        yield server


@pytest.fixture
def vllm(vllm_server: OpenAICompatServer) -> Iterator[OpenAICompatServer]:
    vllm_server.faults.ok()
    vllm_server.requests.clear()
    yield vllm_server
    vllm_server.faults.ok()


@pytest.fixture
def ollama(ollama_server: OllamaServer) -> Iterator[OllamaServer]:
    ollama_server.faults.ok()
    ollama_server.requests.clear()
    yield ollama_server
    ollama_server.faults.ok()
