"""Discovery, parity, failover and coalescing: the service against two loopback providers.

vLLM (priority 0) and Ollama (priority 200) both serve the bundled model for the service's
space, over real sockets, with the real model's vectors. The priorities are far apart so the
expected ranking never flips on probe-latency noise of a loaded machine (the score divides by
(1 + latency/100 ms) and by (1 + priority/10)).
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources, open_resources
from memory_service.cli import format_providers
from memory_service.core.settings import Settings
from memory_service.embeddings.batching import CoalescingEmbedder
from memory_service.providers.local import LocalProvider
from memory_service.providers.registry import EmbedProvider, Registry
from tests.apps import http_app
from tests.memories.factories import assert_error, memory_body
from tests.servers import OllamaServer, OpenAICompatServer

COOLDOWN = 0.2


def providers_file(path: Path, vllm_url: str, ollama_url: str, extra: str = "") -> Path:
    path.write_text(
        f"""
spaces:
  default: {{model: all-MiniLM-L6-v2, dimension: 384, normalized: true}}
  big: {{model: mxbai-embed-large, dimension: 1024, normalized: true}}
providers:
  - {{name: vllm, kind: vllm, base_url: "{vllm_url}", model: all-MiniLM-L6-v2,
      space: default, priority: 0, connect_timeout: 0.5, read_timeout: 10.0, max_batch: 64}}
  - {{name: ollama, kind: ollama, base_url: "{ollama_url}", model: all-minilm,
      space: default, priority: 200, connect_timeout: 0.5, read_timeout: 10.0, max_batch: 64}}
{extra}"""
    )
    return path


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, vllm: OpenAICompatServer, ollama: OllamaServer
) -> Settings:
    """The suite's settings (its own database and data folder) with the two providers."""
    return settings.model_copy(
        update={
            "providers_file": providers_file(tmp_path / "providers.yaml", vllm.url, ollama.url),
            "probe_interval_seconds": 3600,
            "breaker_failure_threshold": 2,
            "breaker_cooldown_seconds": COOLDOWN,
            "coalesce_window_ms": 20,
        }
    )


@pytest.fixture
async def resources(
    settings: Settings,
    local_provider: LocalProvider,
    vllm: OpenAICompatServer,
    ollama: OllamaServer,
) -> AsyncIterator[Resources]:
    """Opened (which probes every provider once); the logs then hold only the test's calls."""
    async with open_resources(settings, local=local_provider) as opened:
        vllm.requests.clear()
        ollama.requests.clear()
        yield opened


@pytest.fixture
async def client(settings: Settings, resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    async with http_app(settings, resources) as http:
        yield http


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def discovery_of(resources: Resources) -> Registry[EmbedProvider]:
    """The embedding registry of resources opened over the configured providers."""
    assert resources.providers is not None
    return resources.providers.embed


def embed_calls(vllm: OpenAICompatServer, ollama: OllamaServer) -> tuple[int, int]:
    return vllm.requests.count("/v1/embeddings"), ollama.requests.count("/api/embed")


def embedded_texts(server: OpenAICompatServer | OllamaServer, path: str) -> list[str]:
    texts: list[str] = []
    for call in server.requests.matching(path):
        assert isinstance(call.body, dict) and isinstance(call.body["input"], list)
        texts += [str(item) for item in call.body["input"]]
    return texts


class TestProbesAndScores:
    async def test_both_answer_and_the_primary_is_best(
        self, resources: Resources, vllm: OpenAICompatServer, ollama: OllamaServer
    ) -> None:
        discovery = discovery_of(resources)
        await discovery.probe_all()
        best = discovery.best()
        assert best is not None and best.name == "vllm"
        status = {row.name: row for row in discovery.status()}
        assert status["vllm"].eligible and status["ollama"].eligible
        assert status["vllm"].details["parity"] == pytest.approx(1.0, abs=1e-5)
        assert status["ollama"].details["parity"] == pytest.approx(1.0, abs=1e-5)
        assert status["vllm"].score is not None and status["ollama"].score is not None
        assert status["vllm"].score > status["ollama"].score
        assert [call.path for call in vllm.requests.all()][:3] == [
            "/health",
            "/v1/models",
            "/v1/embeddings",
        ]
        assert ollama.requests.count("/api/tags") == 1
        async with resources.engine.connect() as conn:
            captured = await conn.scalar(text("SELECT reference_provider FROM embedding_space"))
        assert captured == "vllm", "references come from the preferred provider"

    async def test_the_providers_endpoint_and_table(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/providers")
        assert response.status_code == 200
        body = response.json()
        assert body["best"] == "vllm"
        assert body["space"]["model"] == "all-MiniLM-L6-v2"
        assert "score = (1 - error_rate)" in body["score_formula"]
        names = [provider["name"] for provider in body["providers"]]
        assert names == ["vllm", "ollama"]
        assert all(provider["reason"] == "eligible" for provider in body["providers"])
        table = format_providers(body)
        assert "best: vllm" in table
        assert table.splitlines()[1] == body["score_formula"], "the formula, printed once"
        assert table.splitlines()[3].startswith("provider")
        assert any(line.startswith("ollama") and "eligible" in line for line in table.splitlines())

    async def test_a_provider_of_another_space_is_listed_but_never_eligible(
        self,
        database_url: str,
        tmp_path: Path,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
        local_provider: LocalProvider,
        settings: Settings,
    ) -> None:
        extra = (
            f'  - {{name: big-vllm, kind: vllm, base_url: "{vllm.url}", model: all-MiniLM-L6-v2,'
            " space: big, priority: 1}\n"
        )
        path = providers_file(tmp_path / "extra.yaml", vllm.url, ollama.url, extra)
        with_big = settings.model_copy(update={"providers_file": path})
        async with open_resources(with_big, local=local_provider) as opened:
            status = {row.name: row for row in discovery_of(opened).status()}
        assert not status["big-vllm"].eligible
        assert "declared for space 'big' (mxbai-embed-large" in status["big-vllm"].reason


class TestParity:
    async def test_a_provider_serving_another_model_is_never_written_into_the_space(
        self,
        resources: Resources,
        client: httpx.AsyncClient,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
    ) -> None:
        discovery = discovery_of(resources)
        ollama.faults.other_model()
        await discovery.probe_all()
        status = {row.name: row for row in discovery.status()}
        assert not status["ollama"].eligible
        assert status["ollama"].reason.startswith("parity failed: canary cosine")
        parity = status["ollama"].details["parity"]
        assert parity is not None and parity < 0.99

        vllm.faults.error_500()
        ollama.requests.clear()
        stored = await client.post("/v1/memories", json=memory_body("Never mix spaces."))
        assert stored.status_code == 201 and stored.json()["status"] == "pending"
        assert ollama.requests.count("/api/embed") == 0, "no memory text went to ollama"
        search = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "spaces"}
        )
        assert search.status_code == 503
        error = assert_error(search.json(), "embedder_unavailable")
        assert error["details"]["space"] == "default"

    async def test_a_wrong_dimension_fails_the_probe(
        self, resources: Resources, vllm: OpenAICompatServer
    ) -> None:
        discovery = discovery_of(resources)
        # A frozen clock: on a loaded machine the two probes may outlast the short cooldown,
        # and a breaker due for its trial counts as eligible.
        clock = Clock()
        for provider in discovery.providers:
            provider.breaker.clock = clock
        vllm.faults.wrong_dimension(100)
        await discovery.probe_all()
        await discovery.probe_all()
        status = {row.name: row for row in discovery.status()}
        assert not status["vllm"].eligible
        assert status["vllm"].last_error is not None and "100" in status["vllm"].last_error
        best = discovery.best()
        assert best is not None and best.name == "ollama"


class TestFailover:
    @pytest.mark.parametrize("fault", ["error_500", "drop", "hang"])
    async def test_a_failing_primary_costs_no_request(
        self,
        settings: Settings,
        local_provider: LocalProvider,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
        fault: str,
    ) -> None:
        # A hang is cut by the read timeout: a short one here, for this test alone, yet long
        # enough for the start-up probe's canary embed on a loaded machine.
        quick = settings.model_copy(update={"providers": {"vllm": {"read_timeout": 2.0}}})
        async with (
            open_resources(quick, local=local_provider) as opened,
            http_app(quick, opened) as client,
        ):
            best = discovery_of(opened).best()
            assert best is not None and best.name == "vllm", discovery_of(opened).status()
            vllm.requests.clear()
            ollama.requests.clear()
            await self._fail_over(client, vllm, ollama, fault)

    async def _fail_over(
        self, client: httpx.AsyncClient, vllm: OpenAICompatServer, ollama: OllamaServer, fault: str
    ) -> None:
        getattr(vllm.faults, fault)()
        response = await client.post("/v1/memories", json=memory_body(f"Failover on {fault}."))
        assert response.status_code == 201
        assert response.json()["status"] == "embedded"
        assert vllm.requests.count("/v1/embeddings") == 1
        assert embedded_texts(ollama, "/api/embed") == [f"Failover on {fault}."]
        search = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "failover", "k": 1}
        )
        assert search.status_code == 200
        assert search.json()["results"][0]["id"] == response.json()["id"]

    async def test_a_refused_text_is_not_retried_and_the_memory_says_why(
        self, client: httpx.AsyncClient, vllm: OpenAICompatServer, ollama: OllamaServer
    ) -> None:
        """Without a local tokenizer only the server knows its window: the memory is kept,
        `failed`, with the server's words; the refusal is not sent to another provider."""
        response = await client.post("/v1/memories", json=memory_body("word " * 300))
        assert response.status_code == 201
        stored = response.json()
        assert stored["status"] == "failed"
        assert "maximum context length is 256" in stored["last_error"]
        assert embed_calls(vllm, ollama) == (1, 0), "vllm's 400 is returned, not retried"
        fetched = (await client.get(f"/v1/memories/{stored['id']}")).json()
        assert fetched["status"] == "failed" and fetched["content"] == "word " * 300

    async def test_one_refused_text_in_a_batch_costs_the_others_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        items = [memory_body(f"short fact {i}") for i in range(5)]
        items.insert(2, memory_body("word " * 300))
        response = await client.post("/v1/memories/batch", json={"items": items})
        statuses = [item["status"] for item in response.json()["items"]]
        assert statuses == ["embedded", "embedded", "failed", "embedded", "embedded", "embedded"]

    async def test_a_refused_query_is_422_input_rejected(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "word " * 300}
        )
        assert response.status_code == 422
        assert_error(response.json(), "input_rejected")

    async def test_a_hanging_provider_costs_a_write_at_most_the_inline_deadline(
        self,
        settings: Settings,
        local_provider: LocalProvider,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
    ) -> None:
        """Both providers hang longer than the write may wait: the write is acknowledged
        `pending` (it is durable), and the reconciler embeds it once they answer."""
        bounded = settings.model_copy(update={"inline_embed_seconds": 0.3})
        async with (
            open_resources(bounded, local=local_provider) as opened,
            http_app(bounded, opened) as client,
        ):
            vllm.faults.hang()
            ollama.faults.hang()
            response = await client.post("/v1/memories", json=memory_body("Wait for me."))
            assert response.status_code == 201
            assert response.json()["status"] == "pending"
            vllm.faults.ok()
            ollama.faults.ok()
            await asyncio.sleep(COOLDOWN * 1.5)  # any breaker the hang opened may try again
            assert (await opened.reconciler.run_once()).embedded == 1

    async def test_a_failure_lowers_the_providers_score(
        self, client: httpx.AsyncClient, resources: Resources, vllm: OpenAICompatServer
    ) -> None:
        def vllm_score() -> float:
            row = next(row for row in discovery_of(resources).status() if row.name == "vllm")
            assert row.score is not None
            return row.score

        before = vllm_score()
        vllm.faults.error_500()
        response = await client.post("/v1/memories", json=memory_body("one failure"))
        assert response.json()["status"] == "embedded", "served by the fallback"
        assert vllm_score() == pytest.approx(before * 0.7), "error rate 0.3 after one failure"

    async def test_an_open_breaker_costs_a_request_nothing(
        self,
        client: httpx.AsyncClient,
        resources: Resources,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
    ) -> None:
        discovery = discovery_of(resources)
        clock = Clock()
        for provider in discovery.providers:
            provider.breaker.clock = clock
        vllm.faults.error_500()
        await discovery.probe_all()
        await discovery.probe_all()
        status = {row.name: row for row in discovery.status()}
        assert status["vllm"].state == "open"
        assert status["vllm"].reason.startswith("circuit open")

        ollama.faults.error_500()
        vllm.requests.clear()
        ollama.requests.clear()
        response = await client.post("/v1/memories", json=memory_body("nobody can embed me"))
        assert response.json()["status"] == "pending"
        assert ollama.requests.count("/api/embed") == 1
        assert len(vllm.requests) == 0, "the open breaker kept the request away from vllm"

        vllm.faults.ok()
        clock.now += COOLDOWN  # the cooldown passes; the next probe is the trial
        await discovery.probe_all()
        assert {row.name: row.state for row in discovery.status()}["vllm"] == "closed"
        assert vllm.requests.count("/health") == 1

    async def test_all_down_keeps_writes_pending_until_a_provider_returns(
        self,
        client: httpx.AsyncClient,
        resources: Resources,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
    ) -> None:
        vllm.faults.error_500()
        ollama.faults.error_500()
        items = [memory_body(f"Kept while everything is down {i}.") for i in range(3)]
        response = await client.post("/v1/memories/batch", json={"items": items})
        assert response.status_code == 200
        assert {item["status"] for item in response.json()["items"]} == {"pending"}
        assert (await resources.reconciler.run_once()).embedder_down

        ollama.faults.ok()
        await asyncio.sleep(COOLDOWN * 1.5)
        report = await resources.reconciler.run_once()
        assert report.embedded == 3
        results = await client.post(
            "/v1/memories/search",
            json={"namespace": "agent-1", "query": "everything is down", "k": 5},
        )
        assert len(results.json()["results"]) == 3


class TestCoalescing:
    async def test_concurrent_stores_share_one_provider_call(
        self, client: httpx.AsyncClient, resources: Resources, vllm: OpenAICompatServer
    ) -> None:
        # The service's coalescer class over its real routed embedder; a window long enough
        # that a loaded CI machine cannot split the 32 arrivals across two flushes.
        coalescer = CoalescingEmbedder(resources.batch_embedder, window_seconds=1.0, max_batch=256)
        vectors = await asyncio.gather(
            *(coalescer.embed([f"concurrent memory {i}"]) for i in range(32))
        )
        assert len(vectors) == 32
        assert vllm.requests.count("/v1/embeddings") == 1
        assert sorted(embedded_texts(vllm, "/v1/embeddings")) == sorted(
            f"concurrent memory {i}" for i in range(32)
        )


class TestEmbeddingsGateway:
    """OpenAI's /v1/embeddings goes through the same routing: failover and space safety."""

    async def test_the_primary_serves_and_its_name_is_in_the_header(
        self, client: httpx.AsyncClient, vllm: OpenAICompatServer
    ) -> None:
        response = await client.post(
            "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["a", "b"]}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "vllm"
        assert [item["index"] for item in response.json()["data"]] == [0, 1]
        assert vllm.requests.count("/v1/embeddings") == 1

    async def test_a_failing_primary_fails_over_to_the_fallback(
        self, client: httpx.AsyncClient, vllm: OpenAICompatServer, ollama: OllamaServer
    ) -> None:
        vllm.faults.error_500()
        response = await client.post(
            "/v1/embeddings", json={"model": "all-minilm", "input": "failover"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "ollama"
        assert embedded_texts(ollama, "/api/embed") == ["failover"]

    async def test_a_provider_off_parity_is_never_used_and_the_call_fails_fast(
        self,
        resources: Resources,
        client: httpx.AsyncClient,
        vllm: OpenAICompatServer,
        ollama: OllamaServer,
    ) -> None:
        ollama.faults.other_model()
        await discovery_of(resources).probe_all()
        vllm.faults.error_500()
        ollama.requests.clear()
        response = await client.post(
            "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x"}
        )
        assert response.status_code == 503
        assert_error(response.json(), "embedder_unavailable")
        assert ollama.requests.count("/api/embed") == 0
