"""The ingestion-job API: 202 and Location, progress to the end, 4xx that change nothing."""

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from memory_service.bootstrap import Resources, open_resources
from memory_service.core.settings import Settings
from tests.apps import http_app
from tests.documents.jobs.conftest import MakeWorker, count, notes
from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error

DATA = Path(__file__).parents[1] / "data"
# Bounds a wait that only a wedge would exhaust; nothing asserts on durations.
WEDGED_SECONDS = 120.0


async def submit(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/ingest/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/ingest/jobs/{job['id']}"
    return job


class TestSubmitInline:
    async def test_queued_then_run_to_succeeded_with_its_counts(
        self, client: httpx.AsyncClient, make_worker: MakeWorker, resources: Resources
    ) -> None:
        job = await submit(client, {"namespace": "kb", "documents": notes(3)})
        assert job["state"] == "queued" and job["attempts"] == 0 and job["source"] == "documents"
        assert job["progress"] == {
            "documents_total": 3,
            "documents_done": 0,
            "documents_ingested": 0,
            "documents_unchanged": 0,
            "documents_failed": 0,
            "chunks": 0,
        }
        assert (await client.get(f"/v1/ingest/jobs/{job['id']}")).json() == job

        await make_worker("w1").run(until_idle=True)

        done = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
        assert done["state"] == "succeeded" and done["attempts"] == 1
        assert done["claimed_by"] == "w1" and done["lease_expires_at"] is None
        progress = done["progress"]
        assert progress["documents_total"] == progress["documents_done"] == 3
        assert progress["documents_ingested"] == 3
        assert progress["chunks"] == await count(resources.engine, "chunk") > 3
        assert done["errors"] == {"documents": [], "documents_omitted": 0, "last_error": None}
        assert done["created_at"] <= done["started_at"] <= done["finished_at"]

    async def test_the_same_documents_again_are_unchanged(
        self, client: httpx.AsyncClient, make_worker: MakeWorker, resources: Resources
    ) -> None:
        first = await submit(client, {"namespace": "kb", "documents": notes(2)})
        await make_worker("w1").run(until_idle=True)
        chunks = await count(resources.engine, "chunk")
        again = await submit(client, {"namespace": "kb", "documents": notes(2)})
        await make_worker("w1").run(until_idle=True)
        done = (await client.get(f"/v1/ingest/jobs/{again['id']}")).json()
        assert done["state"] == "succeeded" and again["id"] != first["id"]
        assert done["progress"]["documents_unchanged"] == 2 and done["progress"]["chunks"] == 0
        assert await count(resources.engine, "chunk") == chunks


class TestProgress:
    async def test_a_running_job_shows_its_committed_batches(
        self, client: httpx.AsyncClient, make_worker: MakeWorker, embedder: FlakyProvider
    ) -> None:
        job = await submit(client, {"namespace": "kb", "documents": notes(5)})
        embedder.hold = first_batch = asyncio.Event()
        running = asyncio.create_task(make_worker("w1").run(until_idle=True))
        await asyncio.wait_for(embedder.waiting.wait(), 60)
        embedder.waiting.clear()
        embedder.hold = asyncio.Event()  # the second batch waits here
        first_batch.set()
        await asyncio.wait_for(embedder.waiting.wait(), 60)
        seen = job
        for _ in range(300):  # bounded: progress is written every 2 s
            seen = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
            if seen["progress"]["documents_ingested"]:
                break
            await asyncio.sleep(0.05)
        assert seen["state"] == "running" and seen["claimed_by"] == "w1"
        assert 0 < seen["progress"]["documents_ingested"] < 5
        assert seen["progress"]["chunks"] > 0 and seen["progress"]["documents_total"] == 5
        assert seen["lease_expires_at"] > seen["updated_at"]
        embedder.hold.set()
        await asyncio.wait_for(running, 60)
        done = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
        assert done["state"] == "succeeded" and done["progress"]["documents_ingested"] == 5


class TestInProcessWorker:
    async def test_serve_runs_queued_jobs_by_itself(
        self, settings: Settings, resources: Resources
    ) -> None:
        serving = settings.model_copy(update={"ingest_worker": True})
        async with http_app(serving, resources) as client:
            job = await submit(client, {"namespace": "kb", "documents": notes(2)})
            state = job["state"]
            for _ in range(600):  # bounded: the worker polls every 50 ms
                state = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()["state"]
                if state not in ("queued", "running"):
                    break
                await asyncio.sleep(0.05)
        assert state == "succeeded"


class TestSubmitPath:
    async def test_a_folder_is_walked_and_a_bad_file_fails_alone(
        self, client: httpx.AsyncClient, make_worker: MakeWorker, allowed: Path
    ) -> None:
        (allowed / "notes.txt").write_text((DATA / "notes.txt").read_text())
        (allowed / "guide.md").write_text((DATA / "guide.md").read_text())
        (allowed / "broken.txt").write_bytes(b"not \xff utf-8")
        job = await submit(client, {"namespace": "kb", "path": str(allowed)})
        assert job["source"] == "path" and job["path"] == str(allowed.resolve())
        assert job["progress"]["documents_total"] is None, "known once the folder is walked"

        await make_worker("w1").run(until_idle=True)

        done = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
        assert done["state"] == "succeeded" and done["attempts"] == 1, "not retried"
        progress = done["progress"]
        assert progress["documents_total"] == progress["documents_done"] == 3
        assert progress["documents_ingested"] == 2 and progress["documents_failed"] == 1
        (error,) = done["errors"]["documents"]
        assert error["source_uri"] == (allowed / "broken.txt").resolve().as_uri()
        assert "UTF-8" in error["error"]
        assert "1 documents failed" in done["errors"]["last_error"]

    async def test_only_regular_files_within_the_size_cap_are_read(
        self, client: httpx.AsyncClient, make_worker: MakeWorker, allowed: Path, settings: Settings
    ) -> None:
        (allowed / "notes.txt").write_text((DATA / "notes.txt").read_text())
        os.mkfifo(allowed / "pipe.txt")  # opened for reading, it would wait for a writer forever
        big = allowed / "big.html"
        big.write_text("<p>" + "word " * (settings.ingest_max_file_bytes // 5) + "</p>")
        job = await submit(client, {"namespace": "kb", "path": str(allowed)})

        await asyncio.wait_for(make_worker("w1").run(until_idle=True), WEDGED_SECONDS)

        done = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
        assert done["state"] == "succeeded" and done["attempts"] == 1
        assert done["progress"]["documents_ingested"] == 1
        errors = {e["source_uri"]: e["error"] for e in done["errors"]["documents"]}
        assert errors.keys() == {(allowed / n).resolve().as_uri() for n in ("pipe.txt", "big.html")}
        assert "not a regular file (a FIFO)" in errors[(allowed / "pipe.txt").resolve().as_uri()]
        assert f"at most {settings.ingest_max_file_bytes}" in errors[big.resolve().as_uri()]

    async def test_a_job_whose_every_document_failed_is_failed(
        self, client: httpx.AsyncClient, make_worker: MakeWorker, allowed: Path
    ) -> None:
        (allowed / "broken.txt").write_bytes(b"not \xff utf-8")
        (allowed / "also.md").write_bytes(b"\xfe\xfe")
        job = await submit(client, {"namespace": "kb", "path": str(allowed)})
        await make_worker("w1").run(until_idle=True)
        done = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
        assert (done["state"], done["attempts"]) == ("failed", 1)
        assert done["progress"]["documents_failed"] == 2

    async def test_a_symlink_out_of_the_allowed_folder_is_not_read(
        self,
        client: httpx.AsyncClient,
        make_worker: MakeWorker,
        allowed: Path,
        tmp_path: Path,
        resources: Resources,
    ) -> None:
        secret = tmp_path / "secret.txt"
        secret.write_text("The vault combination is 7-3-9.")
        (allowed / "leak.txt").symlink_to(secret)
        (allowed / "notes.txt").write_text((DATA / "notes.txt").read_text())
        job = await submit(client, {"namespace": "kb", "path": str(allowed)})
        await make_worker("w1").run(until_idle=True)
        done = (await client.get(f"/v1/ingest/jobs/{job['id']}")).json()
        assert done["progress"]["documents_ingested"] == 1
        (error,) = done["errors"]["documents"]
        assert error["source_uri"] == secret.resolve().as_uri()
        assert "outside the allowed folders" in error["error"]
        search = await client.post(
            "/v1/search", json={"namespace": "kb", "query": "vault combination", "mode": "keyword"}
        )
        assert "vault" not in search.text


class TestRefusals:
    async def test_bad_bodies_are_422_and_queue_nothing(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        for body in (
            {"namespace": "kb"},
            {"namespace": "kb", "documents": notes(1), "path": "/srv"},
            {"namespace": "kb", "documents": []},
            {"namespace": "no spaces", "documents": notes(1)},
            {"namespace": "kb", "documents": [{"text": "  "}]},
            {"namespace": "kb", "documents": [{"text": "x", "extra": 1}]},
        ):
            response = await client.post("/v1/ingest/jobs", json=body)
            assert response.status_code == 422, body
            assert_error(response.json(), "validation_error")
        assert await count(resources.engine, "ingest_job") == 0

    async def test_limits_are_422_limit_exceeded_and_queue_nothing(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        big = [{"text": "word " * 2_500, "source_uri": f"kb:{n}"} for n in range(2)]
        cases = {
            "documents": {"namespace": "kb", "documents": notes(6)},
            "text": {"namespace": "kb", "documents": big},
            "metadata": {
                "namespace": "kb",
                "documents": [{"text": "x", "metadata": {"k": "v" * 300}}],
            },
        }
        for field, body in cases.items():
            response = await client.post("/v1/ingest/jobs", json=body)
            assert response.status_code == 422, field
            assert assert_error(response.json(), "limit_exceeded")["details"]["field"] == field
        assert await count(resources.engine, "ingest_job") == 0

    async def test_metadata_is_measured_in_utf8_as_memories_measure_it(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        # 100 two-byte characters: {"k":"é…"} is 208 bytes of UTF-8, within the 256 of
        # these tests, and 608 as ASCII-escaped JSON, which the jobs route used to measure.
        metadata = {"k": "é" * 100}
        response = await client.post(
            "/v1/ingest/jobs",
            json={"namespace": "kb", "documents": [{"text": "x", "metadata": metadata}]},
        )
        assert response.status_code == 202, response.text
        stored = await client.post(
            "/v1/memories", json={"namespace": "kb", "content": "x", "metadata": metadata}
        )
        assert stored.status_code == 201, stored.text
        over = {"k": "é" * 125}  # 258 bytes
        for path, body in (
            (
                "/v1/ingest/jobs",
                {"namespace": "kb", "documents": [{"text": "y", "metadata": over}]},
            ),
            ("/v1/memories", {"namespace": "kb", "content": "y", "metadata": over}),
            ("/v1/documents", {"namespace": "kb", "text": "y", "metadata": over}),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 422, path
            details = assert_error(response.json(), "limit_exceeded")["details"]
            assert details == {"field": "metadata", "limit": 256, "actual": 258} | (
                {"index": 0} if path == "/v1/ingest/jobs" else {}
            ), path
        assert await count(resources.engine, "ingest_job") == 1
        assert await count(resources.engine, "document") == 0

    async def test_two_documents_with_one_identity_are_refused(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        twice = [{"text": "Same text."}, {"text": "Same text."}]
        response = await client.post(
            "/v1/ingest/jobs", json={"namespace": "kb", "documents": twice}
        )
        assert response.status_code == 400
        assert assert_error(response.json(), "invalid_request")["details"]["indexes"] == [0, 1]
        assert await count(resources.engine, "ingest_job") == 0

    async def test_paths_outside_the_allow_list_are_refused(
        self, client: httpx.AsyncClient, resources: Resources, allowed: Path, tmp_path: Path
    ) -> None:
        other = tmp_path / "other"
        other.mkdir()
        (allowed / "elsewhere").symlink_to(other)
        cases = [
            (str(other), 403, "forbidden"),
            (f"{allowed}/../other", 403, "forbidden"),
            (str(allowed / "elsewhere"), 403, "forbidden"),
            ("/", 403, "forbidden"),
            ("allowed/notes", 400, "invalid_request"),
            (str(allowed / "missing"), 400, "invalid_request"),
        ]
        for path, status, error_type in cases:
            response = await client.post("/v1/ingest/jobs", json={"namespace": "kb", "path": path})
            assert response.status_code == status, path
            assert_error(response.json(), error_type)
        assert await count(resources.engine, "ingest_job") == 0

    async def test_with_no_allowed_paths_every_path_is_refused(
        self, settings: Settings, resources: Resources, embedder: FlakyProvider, allowed: Path
    ) -> None:
        closed = settings.model_copy(update={"ingest_allowed_paths": []})
        async with (
            open_resources(closed, embedder=embedder) as opened,
            http_app(closed, opened) as client,
        ):
            response = await client.post(
                "/v1/ingest/jobs", json={"namespace": "kb", "path": str(allowed)}
            )
        assert response.status_code == 403
        assert (
            "MEMORY_INGEST_ALLOWED_PATHS" in assert_error(response.json(), "forbidden")["message"]
        )
        assert await count(resources.engine, "ingest_job") == 0


class TestReadJobs:
    async def test_unknown_ids_are_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get(f"/v1/ingest/jobs/{uuid.uuid4()}")
        assert response.status_code == 404
        assert_error(response.json(), "not_found")
        assert (await client.get("/v1/ingest/jobs/not-a-uuid")).status_code == 422

    async def test_list_pages_newest_first_and_filters(self, client: httpx.AsyncClient) -> None:
        ids = [
            (await submit(client, {"namespace": ns, "documents": notes(1, prefix=str(n))}))["id"]
            for n, ns in enumerate(["a", "a", "a", "b"])
        ]
        first = (await client.get("/v1/ingest/jobs", params={"namespace": "a", "limit": 2})).json()
        assert [job["id"] for job in first["items"]] == [ids[2], ids[1]]
        second = (
            await client.get(
                "/v1/ingest/jobs",
                params={"namespace": "a", "limit": 2, "cursor": first["next_cursor"]},
            )
        ).json()
        assert [job["id"] for job in second["items"]] == [ids[0]]
        assert second["next_cursor"] is None
        queued = (await client.get("/v1/ingest/jobs", params={"state": "queued"})).json()
        assert len(queued["items"]) == 4
        none = (await client.get("/v1/ingest/jobs", params={"state": "dead"})).json()
        assert none == {"items": [], "next_cursor": None}

    @pytest.mark.parametrize(
        ("params", "status"),
        [({"cursor": "nonsense"}, 400), ({"limit": 10_000}, 422), ({"state": "lost"}, 422)],
    )
    async def test_bad_list_parameters(
        self, client: httpx.AsyncClient, params: dict[str, str | int], status: int
    ) -> None:
        response = await client.get("/v1/ingest/jobs", params=params)
        assert response.status_code == status
