"""What every loopback server does alike: lifecycle, transport faults and the request log."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.servers import (
    Fault,
    FaultSetting,
    FaultSwitch,
    LoopbackServer,
    ModelFns,
    OllamaFaults,
    OllamaServer,
    OpenAICompatServer,
)

PROBES = {"vllm": "/health", "ollama": "/api/version"}
TRANSPORT_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError)


@pytest.fixture(params=sorted(PROBES))
def probed(request: pytest.FixtureRequest) -> tuple[LoopbackServer[FaultSwitch], str]:
    server: LoopbackServer[FaultSwitch] = request.getfixturevalue(request.param)
    return server, f"{server.url}{PROBES[request.param]}"


class TestLoopbackServer:
    def test_each_server_listens_on_its_own_loopback_port(
        self, vllm: OpenAICompatServer, ollama: OllamaServer
    ) -> None:
        assert vllm.url.startswith("http://127.0.0.1:")
        assert ollama.url.startswith("http://127.0.0.1:")
        assert vllm.port != ollama.port

    def test_slow_answers_after_the_delay(
        self, probed: tuple[LoopbackServer[FaultSwitch], str]
    ) -> None:
        server, url = probed
        server.faults.slow(0.2)

        assert httpx.get(url, timeout=10).status_code == 200

    def test_hang_outlasts_a_short_client_timeout(
        self, probed: tuple[LoopbackServer[FaultSwitch], str]
    ) -> None:
        server, url = probed
        server.faults.hang()

        with pytest.raises(httpx.ReadTimeout):
            httpx.get(url, timeout=httpx.Timeout(10, read=0.2))

        server.faults.ok()
        assert httpx.get(url, timeout=10).status_code == 200

    def test_drop_closes_the_connection_without_a_response(
        self, probed: tuple[LoopbackServer[FaultSwitch], str]
    ) -> None:
        server, url = probed
        with httpx.Client(timeout=10) as client:
            assert client.get(url).status_code == 200
            server.faults.drop()

            with pytest.raises(TRANSPORT_ERRORS):
                client.get(url)
            with pytest.raises(TRANSPORT_ERRORS):
                httpx.get(url, timeout=10)

        assert server.requests.count() == 3

    def test_stopping_releases_a_hung_request(self, model_fns: ModelFns) -> None:
        server = OpenAICompatServer(model_fns.embed, tokenizer_count=model_fns.count_tokens)
        url = f"{server.start().url}/v1/embeddings"
        server.faults.hang()

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(httpx.post, url, json={"input": "hello"}, timeout=60)
            server.requests.wait_for(1, path="/v1/embeddings")
            server.stop()

            with pytest.raises(TRANSPORT_ERRORS):
                pending.result(timeout=10)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)

    def test_the_log_keeps_every_request_in_order(self, vllm: OpenAICompatServer) -> None:
        httpx.get(f"{vllm.url}/v1/models?limit=1")
        httpx.post(f"{vllm.url}/v1/embeddings", json={"input": ["a", "b"]})
        httpx.post(f"{vllm.url}/v1/embeddings", content=b"not json")

        first, second, third = vllm.requests.all()
        assert (first.method, first.path, first.query, first.body) == (
            "GET",
            "/v1/models",
            "limit=1",
            None,
        )
        assert (second.method, second.path, second.body) == (
            "POST",
            "/v1/embeddings",
            {"input": ["a", "b"]},
        )
        assert second.headers["content-type"] == "application/json"
        assert (third.body, third.raw_body) == (None, b"not json")
        assert first.received_at <= second.received_at <= third.received_at
        assert vllm.requests.count("/v1/embeddings", "post") == 2

        vllm.requests.clear()
        assert len(vllm.requests) == 0

    async def test_the_log_counts_concurrent_requests(self, ollama: OllamaServer) -> None:
        body = {"model": "all-minilm", "input": "hello"}
        async with httpx.AsyncClient(base_url=ollama.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.post("/api/embed", json=body) for _ in range(8))
            )

        assert {response.status_code for response in responses} == {200}
        assert ollama.requests.count("/api/embed") == 8

    def test_a_server_refuses_faults_it_does_not_emulate(self) -> None:
        with pytest.raises(ValueError, match="no_base64"):
            OllamaFaults().set(FaultSetting(Fault.NO_BASE64))
