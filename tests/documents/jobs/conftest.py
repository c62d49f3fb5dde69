"""Fixtures of the ingestion-job tests: an allow-listed folder, small limits, workers."""

from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.bootstrap import Resources
from memory_service.core.settings import Limits, Settings
from memory_service.documents.jobs.worker import JobWorker, job_worker

RETRY_BASE_SECONDS = 30.0
MAX_ATTEMPTS = 3

MakeWorker = Callable[[str], JobWorker]


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    """The one folder the service may read jobs from."""
    folder = tmp_path / "allowed"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(settings: Settings, allowed: Path) -> Settings:
    return settings.model_copy(
        update={
            "ingest_allowed_paths": [allowed],
            "ingest_max_attempts": MAX_ATTEMPTS,
            "ingest_retry_base_seconds": RETRY_BASE_SECONDS,
            "ingest_poll_seconds": 0.05,
            "chunk_max_tokens": 64,
            "chunk_overlap_tokens": 8,
            "ingest_batch_chunks": 4,
            "ingest_max_file_bytes": 64 * 1024,
            "limits": Limits(max_batch_items=5, max_job_chars=20_000, max_metadata_bytes=256),
        }
    )


@pytest.fixture
def make_worker(settings: Settings, resources: Resources) -> MakeWorker:
    """Workers as `serve` and `memory-service worker` build them, each with its own id."""
    assert resources.documents is not None

    def make(worker_id: str) -> JobWorker:
        assert resources.documents is not None
        worker = job_worker(settings, resources.engine, resources.documents)
        worker.worker_id = worker_id
        return worker

    return make


async def job_row(engine: AsyncEngine, job_id: UUID | str) -> dict[str, Any]:
    """The stored row, with `delay` = run_after - updated_at (the backoff a retry set)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT *, run_after - updated_at AS delay FROM ingest_job WHERE id = :id"),
                {"id": job_id},
            )
        ).one()
    return dict(row._mapping)


async def execute(engine: AsyncEngine, statement: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(statement), params)


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


def notes(count: int, prefix: str = "note") -> list[dict[str, Any]]:
    """Inline documents: a few paragraphs each, several chunks at 64 tokens."""
    return [
        {
            "source_uri": f"kb:{prefix}-{n}",
            "title": f"Note {n}",
            "text": "\n\n".join(
                f"Note {n}, paragraph {p}: the ingestion queue hands each job to one worker, "
                "which embeds its documents in batches and commits them one batch at a time."
                for p in range(3)
            ),
            "metadata": {"n": n},
        }
        for n in range(count)
    ]
