"""The gateway on a real socket: streaming relay (and failures mid-stream), memory-augmented
chat, and the cloud budget."""

import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect

from memory_service.api.openai import RelayResponse
from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings
from memory_service.gateway.service import MEMORY_PREAMBLE
from tests.apps import served_app
from tests.gateway.conftest import LOCAL_MODEL, ChatServers, chat_body, completions
from tests.memories.factories import assert_error


@pytest.fixture
async def base_url(settings: Settings, resources: Resources) -> AsyncIterator[str]:
    async with served_app(settings, resources) as url:
        yield url


async def stream_events(
    base_url: str, body: dict[str, object], headers: dict[str, str] | None = None
) -> tuple[httpx.Headers, list[str]]:
    """The response headers and every SSE `data` payload, in order."""
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "POST", f"{base_url}/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            line.removeprefix("data: ")
            async for line in response.aiter_lines()
            if line.startswith("data: ")
        ]
        return response.headers, events


def streamed_text(events: list[str]) -> str:
    parts = []
    for event in events:
        if event == "[DONE]":
            continue
        body = json.loads(event)
        for choice in body.get("choices", []):
            parts.append(choice["delta"].get("content", ""))
    return "".join(parts)


class TestStreaming:
    async def test_every_upstream_event_is_relayed_in_order(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        headers, events = await stream_events(base_url, chat_body("stream this", stream=True))
        assert headers["x-memory-provider"] == "vllm-chat"
        assert "auto: local vllm-chat" in headers["x-memory-route-reason"]
        expected = f"Reply from {LOCAL_MODEL} to: stream this"
        assert streamed_text(events) == expected
        # role chunk + one chunk per word + the finish chunk + [DONE], none merged or split
        assert len(events) == 1 + len(expected.split()) + 1 + 1
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"

    async def test_a_stream_fails_over_before_its_first_byte(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        chat_servers.vllm.faults.error_500()
        headers, events = await stream_events(base_url, chat_body("hi", stream=True))
        assert headers["x-memory-provider"] == "ollama-chat"
        assert "vllm-chat failed" in headers["x-memory-route-reason"]
        assert streamed_text(events).endswith("to: hi")

    async def test_a_connection_dropped_mid_stream_ends_with_an_error_event(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        chat_servers.vllm.faults.stream_break()
        headers, events = await stream_events(base_url, chat_body("break me", stream=True))
        assert headers["x-memory-provider"] == "vllm-chat"
        assert streamed_text(events[:-2]) == "Reply from"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "upstream_error" and error["code"] == 502
        assert "vllm-chat failed mid-stream" in error["message"]
        assert events[-1] == "[DONE]"
        assert completions(chat_servers.ollama) == 0  # no second answer spliced in

    async def test_an_upstream_error_event_is_relayed_as_sent(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        chat_servers.vllm.faults.stream_error()
        _, events = await stream_events(base_url, chat_body("error me", stream=True))
        assert json.loads(events[-2]) == {
            "error": {
                "message": "EngineCore encountered an issue.",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            }
        }
        assert events[-1] == "[DONE]"


class TestMemoryAugmentedChat:
    async def test_recalled_memories_are_prepended_and_their_ids_returned(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            texts = [
                ("alice", "Alice's favourite database is Postgres."),
                ("alice", "Alice walks her dog every morning."),
                ("bob", "Bob's favourite database is SQLite."),
            ]
            stored = await http.post(
                "/v1/memories/batch",
                json={"items": [{"namespace": ns, "content": text} for ns, text in texts]},
            )
            assert stored.status_code == 200, stored.text
            ids = {
                text: item["id"]
                for (_, text), item in zip(texts, stored.json()["items"], strict=True)
            }
            body = chat_body(
                "Which database does Alice like?", memory={"namespace": "alice", "k": 1}
            )
            response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        favourite = ids["Alice's favourite database is Postgres."]
        assert response.json()["memory"] == {"ids": [favourite]}
        assert response.headers["x-memory-ids"] == favourite
        sent = chat_servers.vllm.requests.matching("/v1/chat/completions")[0].body
        assert isinstance(sent, dict) and "memory" not in sent
        messages = sent["messages"]
        assert isinstance(messages, list)
        context, user = messages
        assert context == {
            "role": "user",
            "content": f"{MEMORY_PREAMBLE}\n<memories>\n"
            f'{{"id": "{favourite}", "memory": "Alice\'s favourite database is Postgres."}}\n'
            "</memories>",
        }, "quoted data in a user message, never a system instruction"
        assert user == {"role": "user", "content": "Which database does Alice like?"}

    async def test_a_bad_memory_field_is_a_422_and_nothing_is_sent(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            body = chat_body(memory={"namespace": "alice", "k": 0})
            response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")
        assert sum(completions(s) for s in chat_servers.all()) == 0


class TestBudget:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"chat_cloud_daily_requests": 2})

    async def test_cloud_requests_stop_at_the_daily_limit(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        cloud = {"X-Memory-Tier": "cloud"}
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            for _ in range(2):
                ok = await http.post("/v1/chat/completions", json=chat_body(), headers=cloud)
                assert ok.status_code == 200, ok.text
            refused = await http.post("/v1/chat/completions", json=chat_body(), headers=cloud)
            local = await http.post("/v1/chat/completions", json=chat_body())
        assert refused.status_code == 429
        error = assert_error(refused.json(), "budget_exhausted")
        assert error["details"]["requests"] == 2 and error["details"]["max_requests"] == 2
        assert refused.headers["x-memory-provider"] == "none"
        assert "daily cloud budget is spent" in refused.headers["x-memory-route-reason"]
        assert completions(chat_servers.groq) == 2
        assert local.status_code == 200  # local chat is not budgeted

    async def test_usage_is_settled_to_what_the_provider_reported(
        self, base_url: str, resources: Resources
    ) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            response = await http.post(
                "/v1/chat/completions", json=chat_body(), headers={"X-Memory-Tier": "cloud"}
            )
        assert resources.chat is not None
        usage = await resources.chat.budget.usage()
        assert usage["requests"] == 1
        assert usage["tokens"] == response.json()["usage"]["total_tokens"]

    async def test_a_failed_cloud_call_gives_its_budget_back(
        self, base_url: str, chat_servers: ChatServers, resources: Resources
    ) -> None:
        chat_servers.groq.faults.error_500()
        chat_servers.gemini.faults.error_500()
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            response = await http.post(
                "/v1/chat/completions", json=chat_body(), headers={"X-Memory-Tier": "cloud"}
            )
        assert response.status_code == 503
        assert_error(response.json(), "chat_unavailable")
        assert resources.chat is not None
        usage = await resources.chat.budget.usage()
        assert (usage["requests"], usage["tokens"]) == (0, 0)
        assert completions(chat_servers.groq) == completions(chat_servers.gemini) == 1


class TestCloudStreamUsage:
    async def test_a_cloud_stream_is_settled_on_usage_the_client_did_not_ask_for(
        self, base_url: str, chat_servers: ChatServers, resources: Resources
    ) -> None:
        headers, events = await stream_events(
            base_url, chat_body("count me", stream=True), {"X-Memory-Tier": "cloud"}
        )
        assert headers["x-memory-provider"] == "groq"
        sent = chat_servers.groq.requests.matching("/openai/v1/chat/completions")[0].body
        assert isinstance(sent, dict) and sent["stream_options"] == {"include_usage": True}
        bodies = [json.loads(event) for event in events[:-1]]
        assert all(body["choices"] for body in bodies), "the usage chunk is not forwarded"
        assert resources.chat is not None
        usage = await resources.chat.budget.usage()
        words = len(["Reply", "from", "llama-3.3-70b-versatile", "to:", "count", "me"])
        assert usage["tokens"] == (2 + 4) + words  # the server's own count, not the estimate


class TestHardCap:
    async def test_a_cloud_call_is_sent_with_the_completion_the_budget_granted(
        self, base_url: str, chat_servers: ChatServers, resources: Resources
    ) -> None:
        """The day has 300 tokens left: a request for 1,000 completion tokens goes out with
        max_tokens cut to what is left after its prompt, so the provider cannot pass it."""
        assert resources.chat is not None
        budget = resources.chat.budget
        await budget.reserve(0, budget.max_tokens - 300)
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            response = await http.post(
                "/v1/chat/completions",
                json={**chat_body("cap me"), "max_tokens": 1_000},
                headers={"X-Memory-Tier": "cloud"},
            )
        assert response.status_code == 200, response.text
        sent = chat_servers.groq.requests.matching("/openai/v1/chat/completions")[0].body
        assert isinstance(sent, dict)
        granted = sent["max_tokens"]
        assert isinstance(granted, int) and 64 <= granted < 300
        usage = await budget.usage()
        assert usage["tokens"] <= budget.max_tokens


class TestMemoryQuery:
    async def test_a_last_message_too_long_to_recall_with_names_memory_query(
        self, base_url: str, chat_servers: ChatServers
    ) -> None:
        long_question = "why " * 400
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            refused = await http.post(
                "/v1/chat/completions",
                json=chat_body(long_question, memory={"namespace": "alice"}),
            )
            allowed = await http.post(
                "/v1/chat/completions",
                json=chat_body(long_question, memory={"namespace": "alice", "query": "why"}),
            )
        assert refused.status_code == 422
        error = assert_error(refused.json(), "input_too_long")
        assert error["details"]["field"] == "memory.query"
        assert "set `memory.query`" in error["message"]
        assert allowed.status_code == 200, allowed.text
        assert completions(chat_servers.vllm) == 1


class TestRelayResponse:
    async def test_the_upstream_is_closed_when_the_client_left_before_the_first_byte(
        self,
    ) -> None:
        closed: list[bool] = []
        started: list[bool] = []

        async def events() -> AsyncIterator[bytes]:
            started.append(True)
            yield b"data: [DONE]\n\n"

        async def close() -> None:
            closed.append(True)

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            raise OSError("the client is gone")  # as uvicorn's send does on a closed socket

        response = RelayResponse(events(), close, media_type="text/event-stream")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        with pytest.raises((OSError, ClientDisconnect)):
            await response(scope, receive, send)
        assert (started, closed) == ([], [True])
