"""Routing decisions and their reasons, failover rules, aliases and discovery of chat providers,
over real sockets against loopback vLLM, Ollama, Groq and Gemini chat servers."""

import json

import httpx
import pytest

from memory_service.bootstrap import Resources
from memory_service.cli import format_providers
from tests.gateway.conftest import (
    GEMINI_MODEL,
    GROQ_MODEL,
    LOCAL_MODEL,
    OLLAMA_MODEL,
    ChatServers,
    chat_body,
    completions,
)
from tests.memories.factories import assert_error


def content(response: httpx.Response) -> str:
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


class TestAutoRouting:
    async def test_a_small_request_goes_to_the_best_local_provider(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post("/v1/chat/completions", json=chat_body("hello there"))
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "vllm-chat"
        assert response.headers["x-memory-route-reason"].startswith(
            "auto: local vllm-chat is live and fits"
        )
        assert content(response) == f"Reply from {LOCAL_MODEL} to: hello there"
        sent = chat_servers.vllm.requests.matching("/v1/chat/completions")[0].body
        assert isinstance(sent, dict) and sent["model"] == LOCAL_MODEL
        assert [completions(s) for s in chat_servers.all()] == [1, 0, 0, 0]

    async def test_a_request_larger_than_every_local_window_escalates_to_cloud(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=4000))
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "groq"
        reason = response.headers["x-memory-route-reason"]
        assert "escalated to cloud" in reason and "exceed the local context windows" in reason
        assert completions(chat_servers.vllm) == completions(chat_servers.ollama) == 0

    async def test_a_5xx_fails_over_to_the_next_local_provider(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.vllm.faults.error_500()
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "ollama-chat"
        reason = response.headers["x-memory-route-reason"]
        assert "failover to ollama-chat after: vllm-chat failed" in reason
        assert completions(chat_servers.vllm) == completions(chat_servers.ollama) == 1

    @pytest.mark.parametrize("fault", ["drop", "hang"])
    async def test_dropped_and_hung_locals_escalate_to_cloud(
        self, client: httpx.AsyncClient, chat_servers: ChatServers, fault: str
    ) -> None:
        for server in (chat_servers.vllm, chat_servers.ollama):
            getattr(server.faults, fault)()
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "groq"
        assert "vllm-chat failed" in response.headers["x-memory-route-reason"]
        assert "ollama-chat failed" in response.headers["x-memory-route-reason"]

    async def test_with_no_local_provider_live_the_request_escalates_at_once(
        self, client: httpx.AsyncClient, chat_servers: ChatServers, resources: Resources
    ) -> None:
        chat_servers.vllm.faults.error_500()
        chat_servers.ollama.faults.drop()
        assert resources.providers is not None
        for _ in range(3):  # the breaker threshold: three failed probes open both circuits
            await resources.providers.chat.probe_all()
        for server in chat_servers.all():
            server.requests.clear()
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "groq"
        reason = response.headers["x-memory-route-reason"]
        assert reason == "escalated to cloud: no local provider is available"
        assert completions(chat_servers.vllm) == completions(chat_servers.ollama) == 0

    async def test_a_client_4xx_is_relayed_and_never_failed_over(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post("/v1/chat/completions", json=chat_body(temperature=7))
        assert response.status_code == 400
        error = assert_error(response.json(), "upstream_rejected")
        assert "temperature" in error["message"]
        assert error["details"] == {"provider": "vllm-chat"}
        assert response.headers["x-memory-provider"] == "vllm-chat"
        assert "temperature" in response.headers["x-memory-route-reason"]
        assert [completions(s) for s in chat_servers.all()] == [1, 0, 0, 0]

    async def test_a_cloud_429_fails_over_to_the_other_cloud(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.groq.faults.rate_limited()
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-Memory-Tier": "cloud"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "gemini"
        assert "groq failed" in response.headers["x-memory-route-reason"]
        assert content(response) == f"Reply from {GEMINI_MODEL} to: What is pgvector?"


class TestHints:
    async def test_the_header_pins_the_cloud_tier(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-Memory-Tier": "cloud"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "groq"
        assert response.headers["x-memory-route-reason"].endswith("(from X-Memory-Tier header)")
        sent = chat_servers.groq.requests.matching("/openai/v1/chat/completions")[0]
        assert sent.headers["authorization"] == "Bearer gsk_loopback_key"

    async def test_metadata_tier_routes_and_is_not_sent_upstream(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        body = chat_body(metadata={"tier": "cloud", "trace": "t-1"})
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-memory-provider"] == "groq"
        assert "(from metadata.tier)" in response.headers["x-memory-route-reason"]
        sent = chat_servers.groq.requests.matching("/openai/v1/chat/completions")[0].body
        assert isinstance(sent, dict) and sent["metadata"] == {"trace": "t-1"}

    async def test_the_header_wins_over_metadata(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(metadata={"tier": "cloud"}),
            headers={"X-Memory-Tier": "local"},
        )
        assert response.headers["x-memory-provider"] == "vllm-chat"

    async def test_pinned_local_is_never_escalated(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(max_tokens=4000),
            headers={"X-Memory-Tier": "local"},
        )
        assert response.status_code == 503
        error = assert_error(response.json(), "chat_unavailable")
        assert "exceed the local context windows (largest 2048)" in error["message"]
        assert sum(completions(s) for s in chat_servers.all()) == 0

    async def test_an_unknown_tier_is_a_400(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-Memory-Tier": "edge"}
        )
        assert response.status_code == 400
        error = assert_error(response.json(), "invalid_request")
        assert error["details"] == {"allowed": ["local", "cloud", "auto"]}


class TestAliases:
    async def test_a_served_name_routes_to_its_provider_only(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        body = {**chat_body(), "model": GROQ_MODEL}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.headers["x-memory-provider"] == "groq"
        assert response.headers["x-memory-route-reason"].startswith("escalated to cloud")

    async def test_an_alias_maps_to_the_served_name(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post("/v1/chat/completions", json={**chat_body(), "model": "fast"})
        assert response.headers["x-memory-provider"] == "ollama-chat"
        sent = chat_servers.ollama.requests.matching("/v1/chat/completions")[0].body
        assert isinstance(sent, dict) and sent["model"] == OLLAMA_MODEL

    async def test_an_unknown_model_is_a_404_listing_the_names(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        response = await client.post("/v1/chat/completions", json={**chat_body(), "model": "gpt-9"})
        assert response.status_code == 404
        error = assert_error(response.json(), "not_found")
        assert "fast" in error["details"]["models"] and "auto" in error["details"]["models"]
        assert sum(completions(s) for s in chat_servers.all()) == 0

    async def test_models_lists_every_alias_with_its_providers(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/v1/models")
        assert response.status_code == 200
        cards = {card["id"]: card for card in response.json()["data"]}
        assert cards["fast"]["providers"] == [{"provider": "ollama-chat", "model": OLLAMA_MODEL}]
        assert [p["provider"] for p in cards["auto"]["providers"]] == [
            "vllm-chat",
            "ollama-chat",
            "groq",
            "gemini",
        ]
        assert cards["all-MiniLM-L6-v2"]["task"] == "embed"
        assert cards["default"]["providers"] == [{"provider": "local", "model": "all-MiniLM-L6-v2"}]


class TestChatDiscovery:
    async def test_providers_lists_chat_with_state_tier_and_reason(
        self, client: httpx.AsyncClient
    ) -> None:
        body = (await client.get("/v1/providers")).json()
        chat = {row["name"]: row for row in body["chat"]}
        assert set(chat) == {"vllm-chat", "ollama-chat", "groq", "gemini"}
        assert chat["groq"]["tier"] == "cloud" and chat["vllm-chat"]["tier"] == "local"
        assert all(row["eligible"] and row["latency_ms"] is not None for row in chat.values())
        table = format_providers(body)
        assert "chat provider" in table and "gemini" in table

    @pytest.mark.parametrize("environ", [{"GROQ_API_KEY": "gsk_loopback_key"}])
    async def test_a_cloud_without_its_key_is_not_configured_and_never_called(
        self, client: httpx.AsyncClient, chat_servers: ChatServers, environ: dict[str, str]
    ) -> None:
        chat = {row["name"]: row for row in (await client.get("/v1/providers")).json()["chat"]}
        assert chat["gemini"]["state"] == "not_configured"
        assert chat["gemini"]["reason"] == "not configured: set GEMINI_API_KEY"
        assert not chat["gemini"]["eligible"]
        chat_servers.groq.faults.error_500()
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-Memory-Tier": "cloud"}
        )
        assert response.status_code == 503
        assert len(chat_servers.gemini.requests) == 0

    @pytest.mark.parametrize("environ", [{"GROQ_API_KEY": "wrong", "GEMINI_API_KEY": "wrong"}])
    async def test_a_cloud_with_a_bad_key_fails_its_probe(
        self, client: httpx.AsyncClient, environ: dict[str, str]
    ) -> None:
        chat = {row["name"]: row for row in (await client.get("/v1/providers")).json()["chat"]}
        assert not chat["groq"]["eligible"] and "Invalid API Key" in chat["groq"]["last_error"]
        assert "API key not valid" in chat["gemini"]["last_error"]

    async def test_a_local_server_without_the_model_is_not_eligible(
        self, resources: Resources, chat_servers: ChatServers
    ) -> None:
        assert resources.providers is not None
        chat = resources.providers.chat
        vllm = next(p for p in chat.providers if p.name == "vllm-chat")
        chat_servers.vllm.served_models[:] = ["another-model"]
        try:
            for _ in range(3):
                await chat.probe_all()
        finally:
            chat_servers.vllm.served_models[:] = [LOCAL_MODEL]
        assert "is not served" in (vllm.health.last_error or "")
        assert chat.ineligibility(vllm) is not None
        best = resources.providers.chat.best()
        assert best is not None and best.name != "vllm-chat"


class TestOllamaNative:
    """An Ollama older than its OpenAI-compatible routes is spoken to through /api/chat."""

    async def test_a_completion_falls_back_to_api_chat_for_good(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.ollama.faults.legacy_only()
        for _ in range(2):
            response = await client.post(
                "/v1/chat/completions",
                json={**chat_body("old server", max_tokens=64, temperature=0), "model": "fast"},
            )
            assert response.status_code == 200, response.text
            assert content(response) == f"Reply from {OLLAMA_MODEL} to: old server"
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] == len(content(response).split())
        assert chat_servers.ollama.requests.count("/v1/chat/completions") == 1
        native = chat_servers.ollama.requests.matching("/api/chat")
        assert len(native) == 2
        assert native[0].body == {
            "model": OLLAMA_MODEL,
            "messages": [{"role": "user", "content": "old server"}],
            "stream": False,
            "options": {"num_predict": 64, "temperature": 0},
        }

    async def test_a_stream_is_translated_from_ndjson(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.ollama.faults.legacy_only()
        body = {**chat_body("stream old"), "model": "fast", "stream": True}
        body["stream_options"] = {"include_usage": True}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        events = [
            line.removeprefix("data: ")
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(event) for event in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == f"Reply from {OLLAMA_MODEL} to: stream old"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["usage"]["completion_tokens"] == len(text.split())

    async def test_a_parameter_the_native_api_lacks_fails_over_instead_of_vanishing(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.ollama.faults.legacy_only()
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        response = await client.post(
            "/v1/chat/completions",
            json={**chat_body(), "tools": tools},
            headers={"X-Memory-Tier": "local"},
        )
        chat_servers.vllm.faults.error_500()
        refused = await client.post(
            "/v1/chat/completions",
            json={**chat_body(), "tools": tools},
            headers={"X-Memory-Tier": "local"},
        )
        assert response.headers["x-memory-provider"] == "vllm-chat"
        assert refused.status_code == 503
        assert "cannot serve parameters ['tools']" in refused.json()["error"]["message"]
        assert chat_servers.ollama.requests.count("/api/chat") == 0


class TestHealthFromLiveTraffic:
    async def test_a_completion_counts_as_a_success_but_not_as_latency(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        """How long an answer takes is the length the client asked for: it must not push the
        provider down the ranking (probes measure speed)."""
        assert resources.providers is not None
        vllm = next(p for p in resources.providers.chat.providers if p.name == "vllm-chat")
        before = (vllm.health.latency_ms, vllm.health.successes)
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.headers["x-memory-provider"] == "vllm-chat"
        assert (vllm.health.latency_ms, vllm.health.successes) == (before[0], before[1] + 1)

    async def test_a_half_open_provider_takes_one_trial_and_others_move_on(
        self, client: httpx.AsyncClient, resources: Resources, chat_servers: ChatServers
    ) -> None:
        assert resources.providers is not None
        vllm = next(p for p in resources.providers.chat.providers if p.name == "vllm-chat")
        for _ in range(3):
            vllm.breaker.record_failure()
        vllm.breaker.clock = lambda: 1e12  # the cooldown is over
        assert vllm.breaker.allow(), "the trial goes to whoever asks first: taken here"
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.headers["x-memory-provider"] == "ollama-chat"
        assert "vllm-chat skipped (circuit half-open" in response.headers["x-memory-route-reason"]
        assert completions(chat_servers.vllm) == 0


class TestNativeTranslation:
    async def test_developer_becomes_system_and_images_are_refused(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.ollama.faults.legacy_only()
        body = {
            "model": "fast",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
        }
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        sent = chat_servers.ollama.requests.matching("/api/chat")[0].body
        assert isinstance(sent, dict)
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        body["messages"] = [{"role": "user", "content": [image]}]
        refused = await client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503
        assert "content parts other than text" in refused.json()["error"]["message"]

    async def test_a_malformed_response_format_fails_over_instead_of_crashing(
        self, client: httpx.AsyncClient, chat_servers: ChatServers
    ) -> None:
        chat_servers.ollama.faults.legacy_only()
        response = await client.post(
            "/v1/chat/completions", json={**chat_body(), "model": "fast", "response_format": "json"}
        )
        assert response.status_code == 503
        assert "response_format" in response.json()["error"]["message"]
