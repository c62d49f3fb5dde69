"""Per-key rate limits: requests and embedded tokens per minute, 429 with Retry-After."""

import uuid

import httpx
import pytest

from memory_service.auth.limits import Limiter, RateLimited
from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from tests.apps import http_app
from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error, memory_body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestLimiter:
    def test_a_minutes_worth_then_refused_until_it_refills(self) -> None:
        clock, key = Clock(), uuid.uuid4()
        limiter = Limiter(3, "requests_per_minute", clock)
        for _ in range(3):
            limiter.take(key, 1)
        with pytest.raises(RateLimited) as refused:
            limiter.take(key, 1)
        assert refused.value.headers["Retry-After"] == "20"  # 3 a minute: one every 20 s
        limiter.take(uuid.uuid4(), 1)  # another key has its own bucket
        clock.now = 20.0
        limiter.take(key, 1)

    def test_a_large_request_passes_once_and_its_debt_is_waited_out(self) -> None:
        clock, key = Clock(), uuid.uuid4()
        limiter = Limiter(60, "tokens_per_minute", clock)  # one token a second
        limiter.take(key, 500)  # never refused for its size alone
        with pytest.raises(RateLimited) as refused:
            limiter.take(key, 1)
        assert refused.value.headers["Retry-After"] == "441"
        clock.now = 441.0
        limiter.take(key, 1)

    def test_zero_is_no_limit(self) -> None:
        limiter = Limiter(0, "requests_per_minute", Clock())
        for _ in range(1_000):
            limiter.take(uuid.uuid4(), 1_000_000)


class TestOverHttp:
    async def test_requests_over_the_limit_are_429_with_retry_after(
        self, settings: Settings, embedder: FlakyProvider
    ) -> None:
        limited = settings.model_copy(
            update={"auth": "required", "rate_limit_requests_per_minute": 3}
        )
        async with (
            open_resources(limited, embedder=embedder) as opened,
            http_app(limited, opened) as client,
        ):
            keys = opened.auth.keys
            _, first = await keys.create(name="first", namespaces=["a"], scopes=["read"])
            _, second = await keys.create(name="second", namespaces=["a"], scopes=["read"])
            url = "/v1/memories?namespace=a"
            responses = [await get(client, url, first) for _ in range(4)]
            other = await get(client, url, second)
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        error = assert_error(responses[-1].json(), "rate_limited")
        assert error["details"] == {"limit": "requests_per_minute", "per_minute": 3}
        assert int(responses[-1].headers["retry-after"]) >= 1
        assert other.status_code == 200, "each key has its own limit"

    async def test_embedded_tokens_over_the_limit_are_refused_before_any_work(
        self, settings: Settings, embedder: FlakyProvider
    ) -> None:
        limited = settings.model_copy(
            update={"auth": "required", "rate_limit_tokens_per_minute": 100}
        )
        async with (
            open_resources(limited, embedder=embedder) as opened,
            http_app(limited, opened) as client,
        ):
            _, key = await opened.auth.keys.create(
                name="writer", namespaces=["agent-1"], scopes=["read", "write"]
            )
            headers = {"Authorization": f"Bearer {key}"}
            long = memory_body("A long memory about tea. " * 40)  # about 250 tokens
            first = await client.post("/v1/memories", json=long, headers=headers)
            second = await client.post(
                "/v1/memories", json=memory_body("One more."), headers=headers
            )
            keyword = {"namespace": "agent-1", "query": "tea", "mode": "keyword"}
            search = await client.post("/v1/memories/search", json=keyword, headers=headers)
            listed = await client.get("/v1/memories?namespace=agent-1", headers=headers)
        assert first.status_code == 201, "one large write passes: the key goes into debt"
        assert second.status_code == 429
        assert assert_error(second.json(), "rate_limited")["details"]["limit"] == (
            "tokens_per_minute"
        )
        assert search.status_code == 200, "a keyword search embeds nothing"
        assert [item["content"] for item in listed.json()["items"]] == [long["content"]]


async def get(client: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    return await client.get(url, headers={"Authorization": f"Bearer {key}"})
