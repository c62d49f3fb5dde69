"""A stuck database shows up as 503s, never as a hung request or a 500: a lock held past the
session's lock_timeout, and a pool with no free connection."""

import httpx
import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings
from tests.memories.factories import assert_error, memory_body


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "pool_size": 2,
            "pool_max_overflow": 0,
            "pool_timeout_seconds": 0.5,
            "db_lock_timeout_ms": 300,
        }
    )


class TestDatabaseUnavailable:
    async def test_a_row_locked_past_lock_timeout_is_a_503_and_changes_nothing(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        stored = (await client.post("/v1/memories", json=memory_body("Locked fact."))).json()
        async with resources.engine.connect() as holder:
            await holder.begin()
            await holder.execute(
                text("SELECT 1 FROM memory WHERE id = :id FOR UPDATE"), {"id": stored["id"]}
            )
            response = await client.patch(f"/v1/memories/{stored['id']}", json={"importance": 0.9})
            await holder.rollback()
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        error = assert_error(response.json(), "database_unavailable")
        assert error["details"] == {"reason": "lock_timeout"}
        unchanged = (await client.get(f"/v1/memories/{stored['id']}")).json()
        assert unchanged["importance"] == stored["importance"]

    async def test_no_free_connection_is_a_503(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        async with resources.engine.connect() as first, resources.engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            response = await client.get("/v1/memories", params={"namespace": "agent-1"})
        assert response.status_code == 503
        error = assert_error(response.json(), "database_unavailable")
        assert "pool" in error["details"]["reason"]
        assert (
            await client.get("/v1/memories", params={"namespace": "agent-1"})
        ).status_code == 200
