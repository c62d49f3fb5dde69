"""Keyset pagination stays stable while other clients insert."""

import asyncio
from typing import Any

import httpx

from tests.memories.factories import memory_body


async def walk(client: httpx.AsyncClient, limit: int, between: Any = None) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"namespace": "agent-1", "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/v1/memories", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if between is not None:
            await between()


class TestPagination:
    async def test_inserts_between_pages_neither_repeat_nor_skip(
        self, client: httpx.AsyncClient
    ) -> None:
        items = [memory_body(f"existing {i}") for i in range(30)]
        existing = [
            item["id"]
            for item in (await client.post("/v1/memories/batch", json={"items": items})).json()[
                "items"
            ]
        ]
        counter = iter(range(1000))

        async def insert_three() -> None:
            batch = [memory_body(f"new {next(counter)}") for _ in range(3)]
            await client.post("/v1/memories/batch", json={"items": batch})

        seen = await walk(client, 7, insert_three)
        assert len(seen) == len(set(seen)), "no memory appears twice"
        assert set(existing) <= set(seen), "every memory that existed is listed"

    async def test_concurrent_writers_and_readers(self, client: httpx.AsyncClient) -> None:
        for start in range(0, 40, 10):
            batch = [memory_body(f"base {i}") for i in range(start, start + 10)]
            await client.post("/v1/memories/batch", json={"items": batch})
        existing = set(await walk(client, 200))

        async def writer(worker: int) -> None:
            for i in range(10):
                await client.post("/v1/memories", json=memory_body(f"w{worker} {i}"))

        walks = await asyncio.gather(
            walk(client, 5), walk(client, 3), writer(0), writer(1), walk(client, 4)
        )
        for seen in (walks[0], walks[1], walks[4]):
            assert len(seen) == len(set(seen))
            assert existing <= set(seen)
        final = await walk(client, 200)
        assert len(final) == 60
