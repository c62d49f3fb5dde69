"""Vector, keyword and hybrid search over memories and chunks, with the real model and DB."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources
from memory_service.core.settings import Limits
from memory_service.documents.loaders import LoadedDocument
from memory_service.documents.pipeline import Ingestor
from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error, memory_body
from tests.search.labelled import DOCUMENTS, MEMORIES, QUERIES

NAMESPACE = "agent-1"


async def search(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/search", json={"namespace": NAMESPACE, **body})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def store(client: httpx.AsyncClient, contents: Sequence[str], **fields: Any) -> list[str]:
    items = [memory_body(content, namespace=NAMESPACE, **fields) for content in contents]
    response = await client.post("/v1/memories/batch", json={"items": items})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def ingest(resources: Resources, documents: dict[str, str], **metadata: Any) -> None:
    ingestor = Ingestor(
        engine=resources.engine,
        embedder=resources.batch_embedder,
        chunk_tokens=128,
        overlap_tokens=8,
        limits=Limits(),
    )
    loaded = [
        LoadedDocument(f"file:///{title}.txt", title, body, dict(metadata))
        for title, body in documents.items()
    ]
    report = await ingestor.ingest(loaded, NAMESPACE)
    assert report.failed == []


async def chunk_ids(resources: Resources) -> dict[str, str]:
    """Document title -> the id of its first chunk (every labelled text is one chunk)."""
    async with resources.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT d.title, c.id FROM chunk c JOIN document d ON d.id = c.document_id "
                "WHERE c.ordinal = 0"
            )
        )
        return {title: str(chunk_id) for title, chunk_id in rows}


async def labelled_corpus(client: httpx.AsyncClient, resources: Resources) -> dict[str, str]:
    """Store the labelled set; label -> result id."""
    ids = dict(zip(MEMORIES, await store(client, list(MEMORIES.values())), strict=True))
    await ingest(resources, DOCUMENTS)
    return {**ids, **await chunk_ids(resources)}


class TestKeyword:
    async def test_an_exact_identifier_is_found_first_where_vectors_miss_it(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        ids = await labelled_corpus(client, resources)
        keyword = await search(client, query="ERR-4471-XQ", mode="keyword", k=5)
        assert keyword[0]["id"] == ids["m-err"]
        assert keyword[0]["score"] > 0
        vector = await search(client, query="ERR-4471-XQ", mode="vector", k=3)
        assert ids["m-err"] not in [result["id"] for result in vector[:1]]
        hybrid = await search(client, query="ERR-4471-XQ", k=3, explain=True)
        assert hybrid[0]["id"] == ids["m-err"]
        explain = hybrid[0]["explain"]
        assert explain["keyword_rank"] == 1
        assert explain["vector_rank"] is None or explain["vector_rank"] > 1

    async def test_hybrid_keyword_ranking_needs_two_query_terms_keyword_mode_any(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        one_term, two_terms = await store(
            client, ["The user moved to Berlin last year.", "A coffee shop in Berlin opened."]
        )
        await ingest(resources, {"d-one": "Berlin has many parks.", "d-two": "Berlin coffee."})
        chunks = await chunk_ids(resources)

        def keyword_ranked(results: list[dict[str, Any]]) -> set[str]:
            return {r["id"] for r in results if r["explain"]["keyword_rank"] is not None}

        everything = {one_term, two_terms, chunks["d-one"], chunks["d-two"]}
        body = {"query": "berlin coffee", "k": 10, "explain": True}
        assert keyword_ranked(await search(client, mode="keyword", **body)) == everything
        hybrid = await search(client, mode="hybrid", **body)
        assert keyword_ranked(hybrid) == {two_terms, chunks["d-two"]}
        # A one-term query needs its one term.
        single = await search(client, query="berlin", mode="hybrid", k=10, explain=True)
        assert keyword_ranked(single) == everything

    async def test_pending_memories_are_found_by_keyword_but_not_by_vector(
        self,
        client: httpx.AsyncClient,
        resources: Resources,
        embedder: FlakyProvider,
    ) -> None:
        embedder.down = True
        (pending,) = await store(client, ["Locker code for the gym is QW-5521."])
        keyword = await search(client, query="QW-5521 locker", mode="keyword")
        assert [result["id"] for result in keyword] == [pending]
        embedder.down = False
        vector = await search(client, query="gym locker code", mode="vector")
        assert pending not in [result["id"] for result in vector]

    async def test_expired_memories_are_never_found(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        (expired,) = await store(client, ["Temporary badge TB-3003 for the visitor."])
        await store(client, ["Badge TB-3003 was returned."], expires_at=soon)
        async with resources.engine.begin() as conn:
            await conn.execute(
                text("UPDATE memory SET expires_at = now() - interval '1 minute' WHERE id = :id"),
                {"id": expired},
            )
        for mode in ("keyword", "vector", "hybrid"):
            found = [r["id"] for r in await search(client, query="TB-3003 badge", mode=mode)]
            assert expired not in found, mode
            assert len(found) == 1, mode

    async def test_keyword_search_works_without_an_embedder(
        self, client: httpx.AsyncClient, resources: Resources, embedder: FlakyProvider
    ) -> None:
        ids = await labelled_corpus(client, resources)
        embedder.down = True
        keyword = await search(client, query="ZX-9042-B", mode="keyword")
        assert {result["id"] for result in keyword[:2]} == {ids["m-sku"], ids["d-sku"]}
        response = await client.post(
            "/v1/search", json={"namespace": NAMESPACE, "query": "ZX-9042-B"}
        )
        assert response.status_code == 503
        assert_error(response.json(), "embedder_unavailable")


def reciprocal_rank(results: list[dict[str, Any]], relevant: set[str]) -> float:
    for position, result in enumerate(results, start=1):
        if result["id"] in relevant:
            return 1 / position
    return 0.0


MODES = ("vector", "keyword", "hybrid")


async def mean_reciprocal_rank(client: httpx.AsyncClient, ids: dict[str, str], mode: str) -> float:
    """MRR at k=5 of the labelled queries in `mode`; `ids` maps labels to result ids."""
    total = 0.0
    for query, labels in QUERIES:
        results = await search(client, query=query, mode=mode, k=5)
        total += reciprocal_rank(results, {ids[label] for label in labels})
    return total / len(QUERIES)


class TestHybrid:
    async def test_hybrid_ranks_at_least_as_well_as_either_mode(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        ids = await labelled_corpus(client, resources)
        mrr = {mode: await mean_reciprocal_rank(client, ids, mode) for mode in MODES}
        assert mrr["hybrid"] >= max(mrr["vector"], mrr["keyword"]), mrr
        assert mrr["hybrid"] > min(mrr["vector"], mrr["keyword"]), mrr

    async def test_explain_carries_both_rankings_and_the_fused_score(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await labelled_corpus(client, resources)
        response = await client.post(
            "/v1/search",
            json={"namespace": NAMESPACE, "query": "ZX-9042-B order", "k": 5, "explain": True},
        )
        body = response.json()
        assert body["mode"] == "hybrid"
        assert body["embedding_model"] == "all-MiniLM-L6-v2"
        for result in body["results"]:
            explain = result["explain"]
            assert set(explain) == {
                "vector_rank",
                "vector_score",
                "keyword_rank",
                "keyword_score",
                "fused_score",
            }
            fused = sum(
                1 / (60 + explain[name])
                for name in ("vector_rank", "keyword_rank")
                if explain[name] is not None
            )
            assert result["score"] == pytest.approx(fused) == explain["fused_score"]
        scores = [result["score"] for result in body["results"]]
        assert scores == sorted(scores, reverse=True)
        both = [r for r in body["results"] if None not in r["explain"].values()]
        assert both, "some result is found by both modes"

    async def test_rrf_k_can_be_set_per_request(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await labelled_corpus(client, resources)
        (first, *_) = await search(client, query="ZX-9042-B", k=3, explain=True, rrf_k=1)
        ranks = [first["explain"][n] for n in ("vector_rank", "keyword_rank")]
        assert first["score"] == pytest.approx(sum(1 / (1 + r) for r in ranks if r is not None))

    async def test_without_explain_there_is_no_explanation(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await labelled_corpus(client, resources)
        (result, *_) = await search(client, query="taxes", k=1)
        assert result["explain"] is None


class TestSources:
    async def test_each_source_alone_and_both(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await labelled_corpus(client, resources)
        for mode in ("vector", "keyword", "hybrid"):
            memories = await search(client, query="ZX-9042-B", mode=mode, sources=["memories"])
            documents = await search(client, query="ZX-9042-B", mode=mode, sources=["documents"])
            both = await search(client, query="ZX-9042-B", mode=mode, k=20)
            assert memories and {r["source"] for r in memories} == {"memory"}, mode
            assert documents and {r["source"] for r in documents} == {"document"}, mode
            assert {r["source"] for r in both} == {"memory", "document"}, mode

    async def test_chunk_results_carry_their_document(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await labelled_corpus(client, resources)
        (chunk, *_) = await search(client, query="KX-77-DELTA", sources=["documents"], k=1)
        assert chunk["title"] == "d-vpn"
        assert chunk["source_uri"] == "file:///d-vpn.txt"
        assert chunk["ordinal"] == 0
        assert chunk["document_id"] and chunk["created_at"]
        assert chunk["content"] == DOCUMENTS["d-vpn"]

    async def test_metadata_filters_apply_to_documents_and_scopes_to_memories_only(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await store(client, ["Runbook RB-12 lives in the wiki."], agent_id="a")
        await ingest(resources, {"runbook": "Runbook RB-12 restarts the queue."}, team="ops")
        await ingest(resources, {"other": "Runbook RB-12 draft, unreviewed."}, team="dev")
        scoped = await search(client, query="RB-12", filters={"agent_id": "b"}, mode="keyword")
        assert {r["source"] for r in scoped} == {"document"}, "agent_id filters memories only"
        ops = await search(
            client, query="RB-12", filters={"metadata": {"team": "ops"}}, mode="keyword"
        )
        assert [r["title"] for r in ops] == ["runbook"]
        assert ops[0]["metadata"] == {"team": "ops"}

    async def test_namespaces_are_isolated(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await labelled_corpus(client, resources)
        response = await client.post(
            "/v1/search", json={"namespace": "someone-else", "query": "ZX-9042-B"}
        )
        assert response.json()["results"] == []


class TestValidation:
    @pytest.mark.parametrize(
        "change",
        [
            {"mode": "semantic"},
            {"sources": ["memories", "web"]},
            {"sources": []},
            {"k": 0},
            {"k": 101},
            {"rrf_k": 0},
            {"query": " "},
            {"unknown": 1},
        ],
    )
    async def test_bad_requests_are_422(
        self, client: httpx.AsyncClient, change: dict[str, Any]
    ) -> None:
        body = {"namespace": NAMESPACE, "query": "x", **change}
        response = await client.post("/v1/search", json=body)
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")
