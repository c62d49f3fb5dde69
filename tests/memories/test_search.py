"""Recall by meaning with the real model: ranking, filters, thresholds, expiry, the index."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import ClauseElement, Executable, Select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from memory_service.bootstrap import Resources
from memory_service.core.db import set_local
from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error, memory_body

FACTS = [
    "The user's daughter is called Emma and she is seven.",
    "Quarterly taxes are due on the fifteenth of April.",
    "The production database runs PostgreSQL 17 on three replicas.",
    "The user is vegetarian and avoids mushrooms.",
    "The team's standup meeting starts at 9:30 every weekday.",
    "Our office Wi-Fi password rotates on the first of each month.",
    "The user ran a marathon in Berlin last September.",
    "The dog, Pepper, needs her heartworm pill every month.",
]


async def search(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/memories/search", json={"namespace": "agent-1", **body})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def store_facts(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/memories/batch", json={"items": [memory_body(fact) for fact in FACTS]}
    )
    assert response.status_code == 200


class TestRanking:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("what food does the user not eat?", 3),
            ("how old is the kid?", 0),
            ("when do we have our daily team sync?", 4),
            ("which running race did they finish?", 6),
            ("pet medication schedule", 7),
        ],
    )
    async def test_a_paraphrase_finds_its_memory_first(
        self, client: httpx.AsyncClient, query: str, expected: int
    ) -> None:
        await store_facts(client)
        results = await search(client, query=query, k=3)
        assert results[0]["content"] == FACTS[expected]
        scores = [result["score"] for result in results]
        assert scores == sorted(scores, reverse=True)
        assert -1.0 <= scores[-1] <= scores[0] <= 1.0

    async def test_response_names_the_model_and_carries_fields(
        self, client: httpx.AsyncClient
    ) -> None:
        await store_facts(client)
        response = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "taxes", "k": 2}
        )
        body = response.json()
        assert body["embedding_model"] == "all-MiniLM-L6-v2"
        assert len(body["results"]) == 2
        first = body["results"][0]
        for field in ("id", "content", "score", "metadata", "tags", "created_at", "status"):
            assert field in first
        assert "embedding" not in first

    async def test_namespaces_are_isolated(self, client: httpx.AsyncClient) -> None:
        await store_facts(client)
        await client.post("/v1/memories", json=memory_body("Taxes are fun.", namespace="other"))
        results = await search(client, query="taxes", k=100)
        assert len(results) == len(FACTS)
        assert all(result["namespace"] == "agent-1" for result in results)

    async def test_min_score_drops_weak_matches(self, client: httpx.AsyncClient) -> None:
        await store_facts(client)
        everything = await search(client, query="vegetarian diet", k=8)
        threshold = (everything[0]["score"] + everything[1]["score"]) / 2
        strong = await search(client, query="vegetarian diet", k=8, min_score=threshold)
        assert [result["id"] for result in strong] == [everything[0]["id"]]

    @pytest.mark.parametrize("k", [0, 101, -1])
    async def test_k_out_of_range_is_422(self, client: httpx.AsyncClient, k: int) -> None:
        response = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "x", "k": k}
        )
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")

    async def test_overlong_query_is_rejected(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "query " * 300}
        )
        assert response.status_code == 422
        assert_error(response.json(), "input_too_long")

    async def test_search_without_an_embedder_is_503(
        self, client: httpx.AsyncClient, embedder: FlakyProvider
    ) -> None:
        await store_facts(client)
        embedder.down = True
        response = await client.post(
            "/v1/memories/search", json={"namespace": "agent-1", "query": "taxes"}
        )
        assert response.status_code == 503
        assert_error(response.json(), "embedder_unavailable")


class TestFilters:
    @pytest.fixture
    async def tagged(self, client: httpx.AsyncClient) -> dict[str, str]:
        items = [
            memory_body(
                "Alpha likes green.",
                agent_id="a1",
                user_id="u1",
                session_id="s1",
                tags=["colour", "alpha"],
                metadata={"kind": "pref", "n": 1},
            ),
            memory_body(
                "Beta likes green.",
                agent_id="a2",
                user_id="u1",
                session_id="s2",
                tags=["colour"],
                metadata={"kind": "pref", "n": 2},
            ),
            memory_body(
                "Gamma likes green.",
                agent_id="a1",
                user_id="u2",
                session_id="s1",
                tags=["alpha"],
                metadata={"kind": "fact"},
            ),
        ]
        response = await client.post("/v1/memories/batch", json={"items": items})
        ids = [item["id"] for item in response.json()["items"]]
        return dict(zip(["alpha", "beta", "gamma"], ids, strict=True))

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"agent_id": "a1"}, {"alpha", "gamma"}),
            ({"user_id": "u1"}, {"alpha", "beta"}),
            ({"session_id": "s2"}, {"beta"}),
            ({"tags_any": ["alpha", "nothing"]}, {"alpha", "gamma"}),
            ({"tags_all": ["colour", "alpha"]}, {"alpha"}),
            ({"metadata": {"kind": "pref"}}, {"alpha", "beta"}),
            ({"metadata": {"kind": "pref", "n": 2}}, {"beta"}),
            ({"agent_id": "a1", "tags_any": ["colour"]}, {"alpha"}),
            ({"user_id": "nobody"}, set()),
        ],
    )
    async def test_filter(
        self,
        client: httpx.AsyncClient,
        tagged: dict[str, str],
        filters: dict[str, Any],
        expected: set[str],
    ) -> None:
        results = await search(client, query="who likes green?", k=10, filters=filters)
        by_id = {value: key for key, value in tagged.items()}
        assert {by_id[result["id"]] for result in results} == expected

    async def test_created_window(self, client: httpx.AsyncClient, tagged: dict[str, str]) -> None:
        created = (await client.get(f"/v1/memories/{tagged['alpha']}")).json()["created_at"]
        after = await search(client, query="green", filters={"created_after": created})
        before = await search(client, query="green", filters={"created_before": created})
        assert after == [] and before == []
        moment = datetime.fromisoformat(created)
        window = {
            "created_after": (moment - timedelta(seconds=1)).isoformat(),
            "created_before": (moment + timedelta(seconds=1)).isoformat(),
        }
        assert len(await search(client, query="green", filters=window)) == 3


class TestExpiry:
    async def test_expired_memories_are_never_returned(self, client: httpx.AsyncClient) -> None:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        gone = (
            await client.post(
                "/v1/memories", json=memory_body("Old lunch order: sushi.", expires_at=past)
            )
        ).json()
        kept = (
            await client.post(
                "/v1/memories", json=memory_body("Lunch order: ramen.", expires_at=future)
            )
        ).json()
        results = await search(client, query="what was the lunch order?", k=10)
        assert [result["id"] for result in results] == [kept["id"]]
        assert (await client.get(f"/v1/memories/{gone['id']}")).status_code == 404
        listing = (await client.get("/v1/memories", params={"namespace": "agent-1"})).json()
        assert [item["id"] for item in listing["items"]] == [kept["id"]]

    async def test_setting_a_past_expiry_hides_a_memory(self, client: httpx.AsyncClient) -> None:
        stored = (
            await client.post("/v1/memories", json=memory_body("Temporary code 4412."))
        ).json()
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        patch = await client.patch(f"/v1/memories/{stored['id']}", json={"expires_at": past})
        assert patch.status_code == 200
        assert await search(client, query="temporary code") == []

    async def test_reconciler_purges_expired_rows(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        await client.post("/v1/memories", json=memory_body("Expired.", expires_at=past))
        await client.post("/v1/memories", json=memory_body("Alive."))
        report = await resources.reconciler.run_once()
        assert report.purged == 1
        async with resources.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT content FROM memory"))).scalars().all()
        assert rows == ["Alive."]


class Explain(Executable, ClauseElement):
    """EXPLAIN of a statement, compiled with its bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


class TestDiskannSettings:
    async def test_set_local_lasts_for_the_transaction_only(self, resources: Resources) -> None:
        async with resources.engine.begin() as conn:
            await set_local(conn, "diskann.query_search_list_size", "37")
            inside = await conn.scalar(text("SHOW diskann.query_search_list_size"))
        async with resources.engine.connect() as conn:
            after = await conn.scalar(
                text("SELECT current_setting('diskann.query_search_list_size', true)")
            )
        assert inside == "37"
        assert after != "37"

    async def test_a_request_may_override_them_within_bounds(
        self, client: httpx.AsyncClient
    ) -> None:
        await store_facts(client)
        body = {"namespace": "agent-1", "query": "how old is the kid?", "k": 1}
        # rescore 0 ranks by the index's compressed distances alone: served, maybe less exact.
        tuned = await search(client, **{**body, "search_list_size": 10, "rescore": 0})
        assert len(tuned) == 1
        exact = await search(client, **{**body, "search_list_size": 200, "rescore": 200})
        assert exact[0]["content"] == FACTS[0]
        for override in ({"search_list_size": 5}, {"search_list_size": 5000}, {"rescore": -1}):
            response = await client.post("/v1/memories/search", json={**body, **override})
            assert response.status_code == 422
            assert_error(response.json(), "validation_error")
