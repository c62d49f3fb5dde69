"""Every memories route over HTTP, success and error paths, on a real database and model."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.memories.factories import assert_error, memory_body


async def count(client: httpx.AsyncClient, namespace: str = "agent-1") -> int:
    response = await client.get("/v1/memories", params={"namespace": namespace, "limit": 200})
    assert response.status_code == 200
    return len(response.json()["items"])


class TestStoreMemory:
    async def test_new_memory_is_created_and_embedded(self, client: httpx.AsyncClient) -> None:
        body = memory_body(
            "Alice is allergic to peanuts.",
            metadata={"source": "chat", "turn": 3},
            tags=["health", "alice"],
            agent_id="a1",
            user_id="alice",
            session_id="s1",
            importance=0.9,
        )
        response = await client.post("/v1/memories", json=body)
        assert response.status_code == 201
        stored = response.json()
        assert stored["created"] is True
        assert stored["status"] == "embedded"
        assert stored["embedded_at"] is not None
        for field in ("namespace", "content", "metadata", "tags", "agent_id", "user_id"):
            assert stored[field] == body[field]
        assert stored["importance"] == pytest.approx(0.9)
        fetched = (await client.get(f"/v1/memories/{stored['id']}")).json()
        assert fetched["content"] == body["content"]
        assert fetched["status"] == "embedded"

    async def test_identical_content_returns_existing_and_merges(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await client.post(
            "/v1/memories",
            json=memory_body("Bob likes tea.", metadata={"a": 1, "b": 1}, tags=["x", "y"]),
        )
        again = await client.post(
            "/v1/memories",
            json=memory_body(
                "Bob likes tea.", metadata={"b": 2, "c": 3}, tags=["y", "z"], importance=0.1
            ),
        )
        assert again.status_code == 200
        merged = again.json()
        assert merged["id"] == first.json()["id"]
        assert merged["created"] is False
        assert merged["metadata"] == {"a": 1, "b": 2, "c": 3}
        assert merged["tags"] == ["x", "y", "z"]
        assert merged["importance"] == pytest.approx(0.5), "scalar fields keep the stored value"
        assert await count(client) == 1

    async def test_same_content_in_another_namespace_is_another_memory(
        self, client: httpx.AsyncClient
    ) -> None:
        one = await client.post("/v1/memories", json=memory_body("Shared fact.", "ns-a"))
        two = await client.post("/v1/memories", json=memory_body("Shared fact.", "ns-b"))
        assert one.status_code == two.status_code == 201
        assert one.json()["id"] != two.json()["id"]

    async def test_expired_duplicate_starts_a_fresh_memory(self, client: httpx.AsyncClient) -> None:
        past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        old = await client.post("/v1/memories", json=memory_body("Gone soon.", expires_at=past))
        fresh = await client.post("/v1/memories", json=memory_body("Gone soon."))
        assert fresh.status_code == 201
        assert fresh.json()["id"] != old.json()["id"]
        assert fresh.json()["expires_at"] is None

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (memory_body("x", namespace="has space"), "namespace"),
            (memory_body("x", namespace="n" * 129), "namespace"),
            (memory_body("x", namespace=""), "namespace"),
            (memory_body(""), "content"),
            (memory_body("   \n"), "content"),
            (memory_body("x", importance=1.5), "importance"),
            (memory_body("x", importance=-0.1), "importance"),
            (memory_body("x", expires_at="2030-01-01T00:00:00"), "expires_at"),
            (memory_body("x", expires_at="next tuesday"), "expires_at"),
            (memory_body("x", metadata=["not", "an", "object"]), "metadata"),
            (memory_body("x", tags="not-a-list"), "tags"),
            (memory_body("x", colour="blue"), "colour"),
            ({"namespace": "agent-1"}, "content"),
        ],
    )
    async def test_invalid_body_is_422_and_stores_nothing(
        self, client: httpx.AsyncClient, body: dict[str, Any], field: str
    ) -> None:
        response = await client.post("/v1/memories", json=body)
        assert response.status_code == 422
        error = assert_error(response.json(), "validation_error")
        assert any(detail["loc"][-1] == field for detail in error["details"]), error
        assert await count(client) == 0

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/memories", content=b'{"namespace": ', headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")

    async def test_content_over_the_token_window_is_rejected_not_truncated(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/v1/memories", json=memory_body("token " * 300))
        assert response.status_code == 422
        error = assert_error(response.json(), "input_too_long")
        assert error["details"]["max_tokens"] == 256
        assert error["details"]["tokens"] > 256
        assert await count(client) == 0


class TestLimits:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (memory_body("x" * 16_385), "content"),
            (memory_body("x", metadata={"blob": "y" * 16_400}), "metadata"),
            (memory_body("x", tags=[f"t{i}" for i in range(65)]), "tags"),
            (memory_body("x", tags=["t" * 129]), "tags"),
        ],
    )
    async def test_breaking_a_limit_is_422_limit_exceeded(
        self, client: httpx.AsyncClient, body: dict[str, Any], field: str
    ) -> None:
        response = await client.post("/v1/memories", json=body)
        assert response.status_code == 422
        error = assert_error(response.json(), "limit_exceeded")
        assert error["details"]["field"] == field
        assert error["details"]["actual"] > error["details"]["limit"]
        assert await count(client) == 0

    @pytest.mark.parametrize(
        ("filters", "field"),
        [
            ({"tags_any": [f"t{i}" for i in range(65)]}, "filters.tags_any"),
            ({"tags_all": ["t" * 129]}, "filters.tags_all"),
            ({"metadata": {"blob": "y" * 16_400}}, "filters.metadata"),
        ],
    )
    @pytest.mark.parametrize(
        ("method", "path", "extra"),
        [
            ("POST", "/v1/memories/search", {"query": "anything"}),
            ("POST", "/v1/search", {"query": "anything"}),
            ("POST", "/v1/memories/forget", {}),
        ],
    )
    async def test_a_filter_larger_than_a_memory_can_hold_is_422_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        filters: dict[str, Any],
        field: str,
        method: str,
        path: str,
        extra: dict[str, Any],
    ) -> None:
        await client.post("/v1/memories", json=memory_body("Kept.", tags=["t1"]))
        body = {"namespace": "agent-1", "filters": filters, **extra}
        response = await client.request(method, path, json=body)
        assert response.status_code == 422
        error = assert_error(response.json(), "limit_exceeded")
        assert error["details"]["field"] == field
        assert error["details"]["actual"] > error["details"]["limit"]
        assert await count(client) == 1


class TestStoreBatch:
    async def test_results_follow_input_order(self, client: httpx.AsyncClient) -> None:
        existing = (await client.post("/v1/memories", json=memory_body("Known before."))).json()
        items = [
            memory_body("First new."),
            memory_body("Known before."),
            memory_body("Second new."),
            memory_body("First new.", tags=["again"]),
        ]
        response = await client.post("/v1/memories/batch", json={"items": items})
        assert response.status_code == 200
        out = response.json()["items"]
        assert [item["created"] for item in out] == [True, False, True, False]
        assert out[1]["id"] == existing["id"]
        assert out[3]["id"] == out[0]["id"]
        assert all(item["status"] == "embedded" for item in out)
        assert set(out[0]) == {"id", "status", "created"}
        assert await count(client) == 3
        merged = (await client.get(f"/v1/memories/{out[0]['id']}")).json()
        assert merged["tags"] == ["again"]

    async def test_one_invalid_item_rejects_the_whole_batch(
        self, client: httpx.AsyncClient
    ) -> None:
        items = [memory_body("Fine."), memory_body("Also fine."), memory_body("", tags=[])]
        response = await client.post("/v1/memories/batch", json={"items": items})
        assert response.status_code == 422
        error = assert_error(response.json(), "validation_error")
        assert error["details"][0]["loc"][:3] == ["body", "items", 2]
        assert await count(client) == 0

    async def test_an_item_over_the_token_window_names_its_index(
        self, client: httpx.AsyncClient
    ) -> None:
        items = [memory_body("Fine."), memory_body("word " * 400)]
        response = await client.post("/v1/memories/batch", json={"items": items})
        assert response.status_code == 422
        error = assert_error(response.json(), "input_too_long")
        assert error["details"]["index"] == 1
        assert await count(client) == 0

    async def test_more_than_1000_items_is_422(self, client: httpx.AsyncClient) -> None:
        items = [memory_body(f"m{i}") for i in range(1001)]
        response = await client.post("/v1/memories/batch", json={"items": items})
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")

    async def test_empty_batch_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/memories/batch", json={"items": []})
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")


class TestGetUpdateDelete:
    async def test_unknown_id_is_404_and_bad_id_is_422(self, client: httpx.AsyncClient) -> None:
        missing = "00000000-0000-4000-8000-000000000000"
        for method in ("GET", "DELETE"):
            response = await client.request(method, f"/v1/memories/{missing}")
            assert response.status_code == 404
            assert_error(response.json(), "not_found")
        patch = await client.patch(f"/v1/memories/{missing}", json={"importance": 0.2})
        assert patch.status_code == 404
        bad = await client.get("/v1/memories/not-a-uuid")
        assert bad.status_code == 422
        assert_error(bad.json(), "validation_error")

    async def test_patch_replaces_fields_without_reembedding(
        self, client: httpx.AsyncClient
    ) -> None:
        stored = (
            await client.post(
                "/v1/memories", json=memory_body("Carol works remotely.", metadata={"a": 1})
            )
        ).json()
        response = await client.patch(
            f"/v1/memories/{stored['id']}",
            json={"metadata": {"b": 2}, "tags": ["work"], "importance": 0.8, "user_id": "carol"},
        )
        assert response.status_code == 200
        patched = response.json()
        assert patched["metadata"] == {"b": 2}
        assert patched["tags"] == ["work"]
        assert patched["user_id"] == "carol"
        assert patched["embedded_at"] == stored["embedded_at"]

    async def test_patch_content_reembeds(self, client: httpx.AsyncClient) -> None:
        stored = (
            await client.post("/v1/memories", json=memory_body("Dave owns a red bike."))
        ).json()
        await client.post("/v1/memories", json=memory_body("The office is in Lisbon."))
        response = await client.patch(
            f"/v1/memories/{stored['id']}", json={"content": "Dave plays the cello every evening."}
        )
        assert response.status_code == 200
        assert response.json()["status"] == "embedded"
        assert response.json()["embedded_at"] != stored["embedded_at"]
        search = await client.post(
            "/v1/memories/search",
            json={"namespace": "agent-1", "query": "which instrument does Dave play?", "k": 1},
        )
        assert search.json()["results"][0]["id"] == stored["id"]
        assert "cello" in search.json()["results"][0]["content"]

    async def test_patch_to_existing_content_is_409(self, client: httpx.AsyncClient) -> None:
        one = (await client.post("/v1/memories", json=memory_body("Fact one."))).json()
        two = (await client.post("/v1/memories", json=memory_body("Fact two."))).json()
        response = await client.patch(f"/v1/memories/{two['id']}", json={"content": "Fact one."})
        assert response.status_code == 409
        error = assert_error(response.json(), "conflict")
        assert error["details"]["id"] == one["id"]
        unchanged = (await client.get(f"/v1/memories/{two['id']}")).json()
        assert unchanged["content"] == "Fact two."

    async def test_an_expired_memory_does_not_block_a_patch_to_its_content(
        self, client: httpx.AsyncClient
    ) -> None:
        """Expired memories are invisible: a live memory may take their content, as a new
        store may (the expired row goes, as the reconciler would purge it)."""
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        gone = await client.post("/v1/memories", json=memory_body("Old fact.", expires_at=past))
        live = (await client.post("/v1/memories", json=memory_body("New fact."))).json()
        response = await client.patch(f"/v1/memories/{live['id']}", json={"content": "Old fact."})
        assert response.status_code == 200, response.text
        assert response.json()["content"] == "Old fact." and response.json()["id"] == live["id"]
        assert (await client.get(f"/v1/memories/{gone.json()['id']}")).status_code == 404

    @pytest.mark.parametrize(
        "patch",
        [{}, {"importance": None}, {"content": None}, {"content": ""}, {"nope": 1}],
    )
    async def test_invalid_patch_is_422_and_changes_nothing(
        self, client: httpx.AsyncClient, patch: dict[str, Any]
    ) -> None:
        stored = (await client.post("/v1/memories", json=memory_body("Stable."))).json()
        response = await client.patch(f"/v1/memories/{stored['id']}", json=patch)
        assert response.status_code == 422
        assert_error(response.json(), "validation_error")
        after = (await client.get(f"/v1/memories/{stored['id']}")).json()
        assert after == {key: value for key, value in stored.items() if key != "created"}

    async def test_patch_with_overlong_content_is_rejected(self, client: httpx.AsyncClient) -> None:
        stored = (await client.post("/v1/memories", json=memory_body("Short."))).json()
        response = await client.patch(
            f"/v1/memories/{stored['id']}", json={"content": "long " * 400}
        )
        assert response.status_code == 422
        assert_error(response.json(), "input_too_long")
        assert (await client.get(f"/v1/memories/{stored['id']}")).json()["content"] == "Short."

    async def test_delete(self, client: httpx.AsyncClient) -> None:
        stored = (await client.post("/v1/memories", json=memory_body("Ephemeral."))).json()
        response = await client.delete(f"/v1/memories/{stored['id']}")
        assert response.status_code == 204
        assert response.content == b""
        assert (await client.get(f"/v1/memories/{stored['id']}")).status_code == 404
        assert (await client.delete(f"/v1/memories/{stored['id']}")).status_code == 404


class TestListAndForget:
    async def test_pages_walk_the_namespace_newest_first(self, client: httpx.AsyncClient) -> None:
        for i in range(5):
            await client.post("/v1/memories", json=memory_body(f"note {i}"))
        await client.post("/v1/memories", json=memory_body("elsewhere", namespace="other"))
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"namespace": "agent-1", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/memories", params=params)).json()
            seen += [item["content"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"note {i}" for i in reversed(range(5))]

    async def test_bad_cursor_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            "/v1/memories", params={"namespace": "agent-1", "cursor": "garbage!"}
        )
        assert response.status_code == 400
        assert_error(response.json(), "invalid_request")

    async def test_limit_bounds(self, client: httpx.AsyncClient) -> None:
        too_big = await client.get("/v1/memories", params={"namespace": "agent-1", "limit": 201})
        assert too_big.status_code == 422
        assert_error(too_big.json(), "limit_exceeded")
        zero = await client.get("/v1/memories", params={"namespace": "agent-1", "limit": 0})
        assert zero.status_code == 422
        missing = await client.get("/v1/memories")
        assert missing.status_code == 422
        assert_error(missing.json(), "validation_error")

    async def test_forget_deletes_only_matches(self, client: httpx.AsyncClient) -> None:
        await client.post("/v1/memories", json=memory_body("a", tags=["tmp"], user_id="u1"))
        await client.post("/v1/memories", json=memory_body("b", tags=["tmp"], user_id="u2"))
        await client.post("/v1/memories", json=memory_body("c", tags=["keep"], user_id="u1"))
        await client.post("/v1/memories", json=memory_body("d", namespace="other", tags=["tmp"]))
        response = await client.post(
            "/v1/memories/forget",
            json={"namespace": "agent-1", "filters": {"tags_any": ["tmp"], "user_id": "u1"}},
        )
        assert response.status_code == 200
        assert response.json() == {"deleted": 1}
        assert await count(client) == 2
        assert await count(client, "other") == 1

    async def test_forget_rejects_unknown_filters(self, client: httpx.AsyncClient) -> None:
        await client.post("/v1/memories", json=memory_body("kept"))
        response = await client.post(
            "/v1/memories/forget", json={"namespace": "agent-1", "filters": {"colour": "red"}}
        )
        assert response.status_code == 422
        assert await count(client) == 1


class TestHealth:
    async def test_health_and_ready(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "embedder": "ok"}

    async def test_ready_is_503_when_the_embedder_is_down(
        self, client: httpx.AsyncClient, embedder: Any
    ) -> None:
        embedder.down = True
        response = await client.get("/ready")
        assert response.status_code == 503
        error = assert_error(response.json(), "not_ready")
        assert error["details"]["checks"]["database"] == "ok"
        assert error["details"]["checks"]["embedder"].startswith("unavailable")

    async def test_unknown_route_and_method_use_the_error_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        assert_error((await client.get("/v1/nothing")).json(), "not_found")
        response = await client.put("/v1/memories/search", content=json.dumps({}))
        assert response.status_code == 405
        assert_error(response.json(), "method_not_allowed")
