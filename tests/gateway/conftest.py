"""Chat fixtures: four loopback chat servers (two local, two cloud) and a service over them.

- `vllm-chat` (local, vLLM flavour, window 2048, priority 0)
- `ollama-chat` (local, Ollama flavour, window 2048, priority 200, alias `fast`)
- `groq` (cloud, key from GROQ_API_KEY, window 131072, priority 0)
- `gemini` (cloud, key from GEMINI_API_KEY, window 1048576, priority 200)

Priorities are far apart so that the ranking the tests expect never flips on probe-latency
noise of a loaded machine (the score divides by (1 + latency/100 ms) and by (1 + priority/10)).

Embeddings come from the bundled model (a `local` provider), so memory recall is real.
"""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from memory_service.bootstrap import Resources, open_resources
from memory_service.core.settings import Settings
from memory_service.providers.local import LocalProvider
from tests.apps import http_app
from tests.servers.chat_server import ChatServer

GROQ_KEY = "gsk_loopback_key"
GEMINI_KEY = "gemini-loopback-key"
KEYS = {"GROQ_API_KEY": GROQ_KEY, "GEMINI_API_KEY": GEMINI_KEY}
LOCAL_MODEL = "llama-3.2-1b-instruct"
OLLAMA_MODEL = "llama3.2:1b"
GROQ_MODEL = "llama-3.3-70b-versatile"
GEMINI_MODEL = "gemini-2.5-flash"


@dataclass
class ChatServers:
    vllm: ChatServer
    ollama: ChatServer
    groq: ChatServer
    gemini: ChatServer

    def all(self) -> list[ChatServer]:
        return [self.vllm, self.ollama, self.groq, self.gemini]


@pytest.fixture(scope="module")
def chat_servers_module() -> Iterator[ChatServers]:
    with (
        ChatServer("vllm", LOCAL_MODEL, context_window=2048) as vllm,
        ChatServer("ollama", OLLAMA_MODEL, context_window=2048) as ollama,
        ChatServer("groq", GROQ_MODEL, api_key=GROQ_KEY, context_window=131_072) as groq,
        ChatServer("gemini", GEMINI_MODEL, api_key=GEMINI_KEY, context_window=1_048_576) as gemini,
    ):
        yield ChatServers(vllm, ollama, groq, gemini)


@pytest.fixture
def chat_servers(chat_servers_module: ChatServers) -> Iterator[ChatServers]:
    for server in chat_servers_module.all():
        server.faults.ok()
        server.requests.clear()
    yield chat_servers_module
    for server in chat_servers_module.all():
        server.faults.ok()


def chat_providers_file(path: Path, servers: ChatServers) -> Path:
    path.write_text(
        f"""
spaces:
  default: {{model: all-MiniLM-L6-v2, dimension: 384, normalized: true}}
providers:
  - {{name: local, kind: local, space: default}}
chat:
  - {{name: vllm-chat, kind: vllm, base_url: "{servers.vllm.base_url}", model: {LOCAL_MODEL},
      context_window: 2048, priority: 0, connect_timeout: 0.5, read_timeout: 2}}
  - {{name: ollama-chat, kind: ollama, base_url: "{servers.ollama.base_url}",
      model: "{OLLAMA_MODEL}", aliases: [fast], context_window: 2048, priority: 200,
      connect_timeout: 0.5, read_timeout: 2}}
  - {{name: groq, kind: groq, base_url: "{servers.groq.base_url}", model: {GROQ_MODEL},
      api_key_env: GROQ_API_KEY, context_window: 131072, priority: 0,
      connect_timeout: 0.5, read_timeout: 2}}
  - {{name: gemini, kind: gemini, base_url: "{servers.gemini.base_url}", model: {GEMINI_MODEL},
      api_key_env: GEMINI_API_KEY, context_window: 1048576, priority: 200,
      connect_timeout: 0.5, read_timeout: 2}}
"""
    )
    return path


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, chat_servers: ChatServers) -> Settings:
    """The suite's settings (its own database and data folder) with the chat servers."""
    return settings.model_copy(
        update={
            "providers_file": chat_providers_file(tmp_path / "providers.yaml", chat_servers),
            "probe_interval_seconds": 3600,
            "breaker_failure_threshold": 3,
            "breaker_cooldown_seconds": 30,
            "chat_cloud_daily_requests": 100,
            "chat_cloud_daily_tokens": 1_000_000,
            "chat_default_max_tokens": 256,
        }
    )


@pytest.fixture
def environ() -> dict[str, str]:
    return dict(KEYS)


@pytest.fixture
async def resources(
    settings: Settings,
    local_provider: LocalProvider,
    chat_servers: ChatServers,
    environ: dict[str, str],
) -> AsyncIterator[Resources]:
    """Opened (every provider probed once); the request logs then hold only the test's calls."""
    async with open_resources(settings, environ=environ, local=local_provider) as opened:
        for server in chat_servers.all():
            server.requests.clear()
        yield opened


@pytest.fixture
async def client(settings: Settings, resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    async with http_app(settings, resources) as http:
        yield http


def chat_body(text: str = "What is pgvector?", **extra: object) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def completions(server: ChatServer) -> int:
    """How many chat completion requests `server` received."""
    return server.requests.count(f"{server.prefix}/chat/completions", "POST")
