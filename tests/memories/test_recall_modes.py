"""Memory recall's modes (vector, keyword, hybrid) with the real model and database."""

from typing import Any

import httpx
import pytest

from memory_service.bootstrap import Resources
from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error, memory_body
from tests.search.labelled import MEMORIES, QUERIES

NAMESPACE = "agent-1"
EXPLAIN_FIELDS = {"vector_rank", "vector_score", "keyword_rank", "keyword_score", "fused_score"}


async def recall(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/memories/search", json={"namespace": NAMESPACE, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def ids(client: httpx.AsyncClient, **body: Any) -> list[str]:
    return [hit["id"] for hit in (await recall(client, **body))["results"]]


async def store(client: httpx.AsyncClient, contents: list[str], **fields: Any) -> list[str]:
    items = [memory_body(content, namespace=NAMESPACE, **fields) for content in contents]
    response = await client.post("/v1/memories/batch", json={"items": items})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def labelled(client: httpx.AsyncClient) -> dict[str, str]:
    """The labelled set's memories; label -> id."""
    return dict(zip(MEMORIES, await store(client, list(MEMORIES.values())), strict=True))


class TestModes:
    async def test_vector_is_the_default_and_the_answer_names_its_mode(
        self, client: httpx.AsyncClient
    ) -> None:
        known = await labelled(client)
        default = await recall(client, query="what food does the user not eat?", k=3)
        vector = await recall(client, query="what food does the user not eat?", k=3, mode="vector")
        assert default["mode"] == "vector" and vector["mode"] == "vector"
        assert default["results"] == vector["results"]
        assert default["results"][0]["id"] == known["m-diet"]
        assert all(hit["explain"] is None for hit in default["results"])

    async def test_an_exact_identifier_is_found_by_keyword_and_missed_by_vector(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        known = await labelled(client)
        keyword = await recall(client, query="ERR-4471-XQ", mode="keyword", k=3)
        assert keyword["mode"] == "keyword"
        assert keyword["results"][0]["id"] == known["m-err"]
        assert keyword["results"][0]["score"] > 0
        assert known["m-err"] not in (await ids(client, query="ERR-4471-XQ", k=1))
        hybrid = await recall(client, query="ERR-4471-XQ", mode="hybrid", k=3, explain=True)
        assert hybrid["results"][0]["id"] == known["m-err"]
        assert hybrid["results"][0]["explain"]["keyword_rank"] == 1

    async def test_keyword_finds_pending_memories_and_vector_never_does(
        self,
        client: httpx.AsyncClient,
        resources: Resources,
        embedder: FlakyProvider,
    ) -> None:
        await store(client, ["The gym is open until ten."])
        embedder.down = True
        (pending,) = await store(client, ["Locker code for the gym is QW-5521."])
        found = await recall(client, query="QW-5521 locker", mode="keyword")
        assert [hit["id"] for hit in found["results"]] == [pending]
        assert found["results"][0]["status"] == "pending"
        embedder.down = False
        assert pending not in await ids(client, query="gym locker code", mode="vector")
        hybrid = await recall(client, query="gym locker QW-5521", mode="hybrid", explain=True)
        (via_keyword,) = [hit for hit in hybrid["results"] if hit["id"] == pending]
        assert via_keyword["explain"]["vector_rank"] is None
        assert via_keyword["explain"]["keyword_rank"] is not None

    async def test_keyword_needs_no_embedder_and_the_others_say_so(
        self, client: httpx.AsyncClient, embedder: FlakyProvider
    ) -> None:
        known = await labelled(client)
        embedder.down = True
        assert (await ids(client, query="ZX-9042-B", mode="keyword"))[0] == known["m-sku"]
        for mode in ("vector", "hybrid"):
            response = await client.post(
                "/v1/memories/search",
                json={"namespace": NAMESPACE, "query": "ZX-9042-B", "mode": mode},
            )
            assert response.status_code == 503, mode
            error = assert_error(response.json(), "embedder_unavailable")
            assert "keyword mode" in error["message"]

    async def test_filters_and_namespaces_hold_in_keyword_mode(
        self, client: httpx.AsyncClient
    ) -> None:
        (mine,) = await store(client, ["Runbook RB-12 lives in the wiki."], agent_id="a")
        await store(client, ["Runbook RB-12 draft."], agent_id="b")
        await client.post("/v1/memories", json=memory_body("RB-12 elsewhere.", namespace="x"))
        found = await ids(client, query="RB-12", mode="keyword", filters={"agent_id": "a"})
        assert found == [mine]

    async def test_hybrid_ranks_at_least_as_well_as_either_mode(
        self, client: httpx.AsyncClient
    ) -> None:
        known = await labelled(client)
        queries = [(q, {known[x] for x in labels if x in known}) for q, labels in QUERIES]
        queries = [(query, relevant) for query, relevant in queries if relevant]
        mrr = {}
        for mode in ("vector", "keyword", "hybrid"):
            total = 0.0
            for query, relevant in queries:
                found = await ids(client, query=query, mode=mode, k=5)
                total += next((1 / n for n, i in enumerate(found, 1) if i in relevant), 0.0)
            mrr[mode] = total / len(queries)
        assert mrr["hybrid"] >= max(mrr["vector"], mrr["keyword"]), mrr
        assert mrr["hybrid"] > min(mrr["vector"], mrr["keyword"]), mrr


class TestExplain:
    async def test_hybrid_explains_both_rankings_and_the_fused_score(
        self, client: httpx.AsyncClient
    ) -> None:
        await labelled(client)
        body = {"query": "ZX-9042-B order", "k": 5, "explain": True}
        results = (await recall(client, mode="hybrid", rrf_k=10, **body))["results"]
        for hit in results:
            explain = hit["explain"]
            assert set(explain) == EXPLAIN_FIELDS
            ranks = [explain[name] for name in ("vector_rank", "keyword_rank")]
            fused = sum(1 / (10 + rank) for rank in ranks if rank is not None)
            assert hit["score"] == pytest.approx(fused) == explain["fused_score"]
        assert [hit["score"] for hit in results] == sorted(
            (hit["score"] for hit in results), reverse=True
        )
        assert any(None not in hit["explain"].values() for hit in results)

    async def test_a_single_mode_explains_its_own_ranking(self, client: httpx.AsyncClient) -> None:
        await labelled(client)
        (vector, *_) = (await recall(client, query="taxes", mode="vector", explain=True))["results"]
        assert vector["explain"]["vector_rank"] == 1
        assert vector["explain"]["vector_score"] == pytest.approx(vector["score"])
        assert vector["explain"]["keyword_rank"] is None
        assert vector["explain"]["fused_score"] is None
        keyword = (await recall(client, query="ERR-4471-XQ", mode="keyword", explain=True))[
            "results"
        ][0]
        assert keyword["explain"]["keyword_rank"] == 1
        assert keyword["explain"]["vector_rank"] is None


class TestThresholds:
    async def test_min_score_in_hybrid_drops_weak_vector_matches_only(
        self, client: httpx.AsyncClient
    ) -> None:
        known = await labelled(client)
        body = {"query": "ERR-4471-XQ", "mode": "hybrid", "k": 9, "explain": True}
        loose = (await recall(client, **body))["results"]
        strict = (await recall(client, **body, min_score=0.99))["results"]
        assert any(hit["explain"]["vector_rank"] for hit in loose)
        assert all(hit["explain"]["vector_rank"] is None for hit in strict)
        assert strict[0]["id"] == known["m-err"], "its keyword match still counts"


class TestValidation:
    @pytest.mark.parametrize(
        "change",
        [
            {"mode": "semantic"},
            {"mode": None},
            {"mode": "keyword", "min_score": 0.5},
            {"rrf_k": 0},
            {"explain": "very"},
        ],
    )
    async def test_bad_requests_are_422_and_change_nothing(
        self, client: httpx.AsyncClient, change: dict[str, Any]
    ) -> None:
        await store(client, ["Alpha."])
        before = (await client.get("/v1/memories", params={"namespace": NAMESPACE})).json()
        response = await client.post(
            "/v1/memories/search", json={"namespace": NAMESPACE, "query": "alpha", **change}
        )
        assert response.status_code == 422
        error = assert_error(response.json(), "validation_error")
        if "min_score" in change:
            assert "min_score" in error["message"] + str(error["details"])
        after = (await client.get("/v1/memories", params={"namespace": NAMESPACE})).json()
        assert after == before
