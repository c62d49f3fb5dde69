"""Protocol-faithful loopback servers for provider clients, discovery tests and benchmarks.

`OpenAICompatServer` speaks vLLM 0.32's OpenAI-compatible API and `OllamaServer` Ollama's native
API, over real sockets on 127.0.0.1, with vectors from the real model that is injected as
callables (`bundled_embedder()` or `embedder_from_model(...)`). Each server has a thread-safe
fault switch (`server.faults`) and a request log (`server.requests`).
"""

from tests.servers.embedder import (
    CountTokensFn,
    EmbedFn,
    ModelFns,
    bundled_embedder,
    bundled_model,
    embedder_from_model,
    max_chars_per_token,
)
from tests.servers.faults import (
    Fault,
    FaultSetting,
    FaultSwitch,
    OllamaFaults,
    OpenAIFaults,
    RecordedRequest,
    RequestLog,
)
from tests.servers.ollama_server import OllamaServer
from tests.servers.ollama_wire import OllamaModel
from tests.servers.openai_compat import OpenAICompatServer
from tests.servers.runner import LoopbackServer

__all__ = [
    "CountTokensFn",
    "EmbedFn",
    "Fault",
    "FaultSetting",
    "FaultSwitch",
    "LoopbackServer",
    "ModelFns",
    "OllamaFaults",
    "OllamaModel",
    "OllamaServer",
    "OpenAICompatServer",
    "OpenAIFaults",
    "RecordedRequest",
    "RequestLog",
    "bundled_embedder",
    "bundled_model",
    "embedder_from_model",
    "max_chars_per_token",
]
