"""`memory-service worker` as an operator runs it: a real process on a real queue."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.documents.jobs.conftest import notes
from tests.documents.test_ingest_command import chunk_count, env_for, libpq, write_corpus

pytestmark = pytest.mark.slow

# `python -m` from the checkout's root: the code under test, whichever checkout installed
# the `memory-service` script.
ROOT = Path(__file__).resolve().parents[3]
COMMAND = [sys.executable, "-m", "memory_service.cli", "worker"]


def queue_job(database_url: str, **source: Any) -> str:
    """Queue a job straight into the table, as another process's API would."""
    with psycopg.connect(libpq(database_url)) as conn:
        if "documents" in source:
            row = conn.execute(
                "INSERT INTO ingest_job (namespace, documents, documents_total) "
                "VALUES ('kb', %s::jsonb, %s) RETURNING id",
                (json.dumps(source["documents"]), len(source["documents"])),
            ).fetchone()
        else:
            row = conn.execute(
                "INSERT INTO ingest_job (namespace, path) VALUES ('kb', %s) RETURNING id",
                (source["path"],),
            ).fetchone()
    assert row is not None
    return str(row[0])


def job_state(database_url: str, job_id: str) -> tuple[str, int, str | None]:
    with psycopg.connect(libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT state, attempts, claimed_by FROM ingest_job WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def worker_env(database_url: str, allowed: Path | None = None) -> dict[str, str]:
    env = env_for(database_url)
    if allowed is not None:
        env["MEMORY_INGEST_ALLOWED_PATHS"] = json.dumps([str(allowed)])
    return env


class TestWorkerCommand:
    def test_until_idle_runs_the_queued_job_and_exits(self, database_url: str) -> None:
        job_id = queue_job(database_url, documents=notes(3))
        done = subprocess.run(
            [*COMMAND, "--until-idle"],
            env=worker_env(database_url),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        assert job_state(database_url, job_id)[:2] == ("succeeded", 1)
        assert f"ingest job {job_id}: succeeded" in done.stderr, "progress is logged"
        assert chunk_count(database_url) > 3

    def test_sigterm_gives_the_job_back_and_a_rerun_finishes_it_without_duplicates(
        self, database_url: str, tmp_path: Path
    ) -> None:
        corpus = tmp_path / "corpus"
        write_corpus(corpus, 150)
        job_id = queue_job(database_url, path=str(corpus))
        env = worker_env(database_url, allowed=tmp_path)
        worker = subprocess.Popen(COMMAND, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        deadline = time.monotonic() + 180
        while chunk_count(database_url) == 0 and worker.poll() is None:
            assert time.monotonic() < deadline, "no batch was committed in time"
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
        assert job_state(database_url, job_id) == ("queued", 0, None), stderr
        assert "released" in stderr

        rerun = subprocess.run(
            [*COMMAND, "--until-idle"], env=env, capture_output=True, text=True, cwd=ROOT
        )
        assert rerun.returncode == 0, rerun.stderr
        assert job_state(database_url, job_id)[:2] == ("succeeded", 1)
        with psycopg.connect(libpq(database_url)) as conn:
            row = conn.execute("SELECT count(*), sum(chunk_count) FROM document").fetchone()
        assert row is not None and row[0] == 150
        assert chunk_count(database_url) == row[1], "no chunk twice"
