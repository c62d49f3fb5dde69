"""A full embedding queue answers at once: stores stay pending, searches get 503
`overloaded` with Retry-After; nothing waits without bound. Served as `serve` builds it
(the coalescer in front of a vLLM-compatible loopback server running the real model)."""

import asyncio
from pathlib import Path

from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from memory_service.embeddings.batching import CoalescingEmbedder
from tests.apps import http_app
from tests.memories.factories import assert_error, memory_body
from tests.servers import OpenAICompatServer

WEDGED_SECONDS = 60.0


async def test_past_the_queue_bound_stores_go_pending_and_searches_are_503(
    settings: Settings, tmp_path: Path, vllm: OpenAICompatServer
) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "spaces:\n  default: {model: all-MiniLM-L6-v2, dimension: 384, normalized: true}\n"
        "providers:\n"
        f'  - {{name: vllm, kind: vllm, base_url: "{vllm.url}", model: all-MiniLM-L6-v2,\n'
        "      space: default, connect_timeout: 1, read_timeout: 30}\n"
    )
    configured = settings.model_copy(
        update={
            "providers_file": providers,
            "probe_interval_seconds": 3600,
            "coalesce_max_batch": 4,
            "coalesce_max_waiting": 4,
            "inline_embed_seconds": 30,
        }
    )
    async with open_resources(configured) as resources, http_app(configured, resources) as client:
        coalescer = resources.embedder
        assert isinstance(coalescer, CoalescingEmbedder)
        # The first flush is held this long at the provider: far longer than the steps below
        # take, which only wait on the service's own answers.
        vllm.faults.slow(15.0)
        probes = vllm.requests.count("/v1/embeddings")
        in_flight = asyncio.create_task(client.post("/v1/memories", json=memory_body("First.")))
        for _ in range(600):  # bounded: until the first flush is at the provider
            if vllm.requests.count("/v1/embeddings") > probes:
                break
            await asyncio.sleep(0.01)
        queued = [
            asyncio.create_task(client.post("/v1/memories", json=memory_body(f"Queued {i}.")))
            for i in range(4)
        ]
        for _ in range(500):  # bounded: until the four wait behind it
            if coalescer.depth == 4:
                break
            await asyncio.sleep(0.01)
        assert coalescer.depth == 4

        over = await client.post("/v1/memories", json=memory_body("Over the bound."))
        assert over.status_code == 201 and over.json()["status"] == "pending"
        search = await client.post("/v1/search", json={"namespace": "agent-1", "query": "first"})
        assert search.status_code == 503
        assert search.headers["retry-after"] == "1"
        assert_error(search.json(), "overloaded")

        vllm.faults.ok()  # the flush after the held one is answered at once
        answers = await asyncio.wait_for(asyncio.gather(in_flight, *queued), WEDGED_SECONDS)
        assert {a.json()["status"] for a in answers} == {"embedded"}
