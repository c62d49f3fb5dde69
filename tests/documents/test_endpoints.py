"""POST /v1/documents: one document, synchronously."""

import httpx

from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error

TEXT = "# Release notes\n\n" + "\n\n".join(
    f"Version 1.{i} fixed bug number {i} in the importer and sped up search." for i in range(40)
)


class TestIngestDocument:
    async def test_ingests_then_reports_unchanged(self, client: httpx.AsyncClient) -> None:
        body = {"namespace": "docs", "text": TEXT, "title": "Notes", "source_uri": "kb:notes"}
        first = await client.post("/v1/documents", json=body)
        assert first.status_code == 201
        stored = first.json()
        assert stored["status"] == "ingested" and stored["chunks"] >= 2
        again = await client.post("/v1/documents", json=body)
        assert again.status_code == 200
        assert again.json() == {**stored, "status": "unchanged"}
        changed = await client.post("/v1/documents", json={**body, "text": TEXT + "\n\nMore."})
        assert changed.status_code == 201 and changed.json()["id"] == stored["id"]

    async def test_without_a_source_uri_the_text_names_it(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/documents", json={"namespace": "docs", "text": "Hello."})
        assert response.json()["source_uri"].startswith("api:sha256:")

    async def test_bad_bodies_are_422(self, client: httpx.AsyncClient) -> None:
        for body in (
            {"namespace": "docs"},
            {"namespace": "no spaces", "text": "x"},
            {"namespace": "docs", "text": "  "},
            {"namespace": "docs", "text": "x", "y": 1},
        ):
            response = await client.post("/v1/documents", json=body)
            assert response.status_code == 422
            assert_error(response.json(), "validation_error")

    async def test_embedder_down_is_503_and_nothing_is_written(
        self, client: httpx.AsyncClient, embedder: FlakyProvider
    ) -> None:
        embedder.down = True
        response = await client.post(
            "/v1/documents", json={"namespace": "docs", "text": TEXT, "source_uri": "kb:x"}
        )
        assert response.status_code == 503
        assert_error(response.json(), "embedder_unavailable")
        embedder.down = False
        retry = await client.post(
            "/v1/documents", json={"namespace": "docs", "text": TEXT, "source_uri": "kb:x"}
        )
        assert retry.status_code == 201, "the failed attempt left nothing behind"
