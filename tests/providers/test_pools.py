"""Each provider has an HTTP pool of its own (`providers.http.new_client`): chat requests
that hold every chat connection leave the embedders theirs, and an embedder whose requests
hang leaves the other embedders theirs.

With one pool shared by chat and embedders (as before), the embed below waited for a
connection until its pool timeout and the write stayed pending: open chat streams made the
embedder look dead.
"""

import asyncio
from pathlib import Path

from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from memory_service.providers.http import POOLS
from tests.servers import ModelFns, OpenAICompatServer
from tests.servers.chat_server import ChatServer

CHAT_MODEL = "llama-3.2-1b-instruct"
CHAT_PATH = "/v1/chat/completions"


def providers_file(path: Path, vllm: OpenAICompatServer, chat: ChatServer) -> Path:
    path.write_text(
        f"""
spaces:
  default: {{model: all-MiniLM-L6-v2, dimension: 384, normalized: true}}
providers:
  - {{name: vllm, kind: vllm, base_url: "{vllm.url}", model: all-MiniLM-L6-v2,
      space: default, connect_timeout: 1, read_timeout: 5}}
chat:
  - {{name: vllm-chat, kind: vllm, base_url: "{chat.base_url}", model: {CHAT_MODEL},
      connect_timeout: 1, read_timeout: 120}}
"""
    )
    return path


async def test_held_chat_connections_leave_embedders_their_pool(
    settings: Settings, tmp_path: Path, vllm: OpenAICompatServer
) -> None:
    connections, _ = POOLS["chat"]
    with ChatServer("vllm", CHAT_MODEL, context_window=2048) as chat:
        configured = settings.model_copy(
            update={
                "providers_file": providers_file(tmp_path / "providers.yaml", vllm, chat),
                "probe_interval_seconds": 3600,
            }
        )
        async with open_resources(configured) as resources:
            assert resources.providers is not None
            (chat_provider,) = resources.providers.chat.providers
            chat.faults.hang()  # every completion is held open until its client leaves
            payload = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
            held = [
                asyncio.create_task(chat_provider.client.complete(payload))
                for _ in range(connections + 8)
            ]
            try:
                for _ in range(600):  # bounded: until the chat pool is all taken
                    if chat.requests.count(CHAT_PATH) >= connections:
                        break
                    await asyncio.sleep(0.05)
                assert chat.requests.count(CHAT_PATH) == connections, "the chat pool is full"
                embedding = await resources.embedder.embed(["embedded while chat waits"])
                assert embedding.provider == "vllm"
                assert embedding.vectors.shape == (1, 384)
                assert not any(task.done() for task in held), "the chats were still held"
            finally:
                for task in held:
                    task.cancel()
                await asyncio.gather(*held, return_exceptions=True)


async def test_a_hung_embedder_leaves_the_other_embedders_their_pool(
    settings: Settings, tmp_path: Path, vllm: OpenAICompatServer, model_fns: ModelFns
) -> None:
    connections, _ = POOLS["embed"]
    with OpenAICompatServer(model_fns.embed, tokenizer_count=model_fns.count_tokens) as other:
        providers = tmp_path / "providers.yaml"
        providers.write_text(
            "spaces:\n  default: {model: all-MiniLM-L6-v2, dimension: 384, normalized: true}\n"
            "providers:\n"
            + "".join(
                f'  - {{name: {name}, kind: vllm, base_url: "{server.url}", '
                "model: all-MiniLM-L6-v2, space: default, connect_timeout: 1, "
                "read_timeout: 120}\n"
                for name, server in (("hung", vllm), ("other", other))
            )
        )
        configured = settings.model_copy(
            update={"providers_file": providers, "probe_interval_seconds": 3600}
        )
        async with open_resources(configured) as resources:
            assert resources.providers is not None
            hung, spare = resources.providers.embed.providers
            vllm.requests.clear()  # the probes' canaries
            vllm.faults.hang()
            held = [
                asyncio.create_task(hung.client.embed([f"held {i}"]))
                for i in range(connections + 8)
            ]
            try:
                for _ in range(600):  # bounded: until the hung provider's pool is all taken
                    if vllm.requests.count("/v1/embeddings") >= connections:
                        break
                    await asyncio.sleep(0.05)
                assert vllm.requests.count("/v1/embeddings") == connections
                vectors = await asyncio.wait_for(spare.client.embed(["still served"]), 30)
                assert vectors.shape == (1, 384)
                assert not any(task.done() for task in held), "the hung calls were still held"
            finally:
                for task in held:
                    task.cancel()
                await asyncio.gather(*held, return_exceptions=True)
