"""`memory-service ingest` as a user runs it: interrupted and resumed, failures, stdin."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

COMMAND = str(Path(sys.executable).parent / "memory-service")
pytestmark = pytest.mark.slow

PARAGRAPH = (
    "Paragraph {p} of note {n}. The team reviewed the quarterly roadmap and agreed to ship the "
    "search feature first, then revisit ingestion throughput once the benchmarks are in. "
    "Everyone should read the design document before Thursday."
)


def env_for(database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEMORY_")}
    env.update(
        MEMORY_DATABASE_URL=database_url,
        MEMORY_CHUNK_MAX_TOKENS="64",
        MEMORY_CHUNK_OVERLAP_TOKENS="8",
        MEMORY_INGEST_BATCH_CHUNKS="8",
    )
    return env


def libpq(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def write_corpus(folder: Path, files: int) -> None:
    folder.mkdir()
    for n in range(files):
        body = "\n\n".join(PARAGRAPH.format(p=p, n=n) for p in range(4))
        (folder / f"note-{n:03d}.md").write_text(f"# Note {n}\n\n{body}\n")


def chunk_count(database_url: str) -> int:
    with psycopg.connect(libpq(database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM chunk").fetchone()
        return int(row[0]) if row else 0


class TestIngestCommand:
    def test_a_killed_ingest_resumes_without_duplicates(
        self, database_url: str, tmp_path: Path
    ) -> None:
        corpus = tmp_path / "corpus"
        write_corpus(corpus, 150)
        args = [COMMAND, "ingest", str(corpus), "--namespace", "notes"]
        first = subprocess.Popen(args, env=env_for(database_url), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while chunk_count(database_url) == 0 and first.poll() is None:
            assert time.monotonic() < deadline, "no batch was committed in time"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL, "killed while still ingesting"
        committed = chunk_count(database_url)

        second = subprocess.run(args, env=env_for(database_url), capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
        summary = re.search(
            r"150 documents: (\d+) ingested, (\d+) unchanged, 0 failed", second.stderr
        )
        assert summary, second.stderr
        assert int(summary.group(2)) > 0, "the committed batches were not done again"
        with psycopg.connect(libpq(database_url)) as conn:
            documents = conn.execute("SELECT count(*) FROM document").fetchone()
            inconsistent = conn.execute(
                "SELECT count(*) FROM document d WHERE chunk_count <> "
                "(SELECT count(*) FROM chunk c WHERE c.document_id = d.id)"
            ).fetchone()
        assert documents == (150,) and inconsistent == (0,)
        assert chunk_count(database_url) > committed

    def test_failures_are_listed_and_the_exit_code_says_so(
        self, database_url: str, tmp_path: Path
    ) -> None:
        folder = tmp_path / "mixed"
        folder.mkdir()
        (folder / "good.txt").write_text("A perfectly fine document.")
        (folder / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
        result = subprocess.run(
            [COMMAND, "ingest", str(folder), "--namespace", "mixed"],
            env=env_for(database_url),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1
        assert "2 ingested" in result.stderr
        assert re.search(r"FAILED file://\S+bad\.jsonl: .*line 2", result.stderr), result.stderr

    def test_stdin(self, database_url: str) -> None:
        result = subprocess.run(
            [COMMAND, "ingest", "-", "--namespace", "piped", "--format", "md"],
            env=env_for(database_url),
            input="# Piped\n\nA document that arrived on standard input.\n",
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "1 ingested" in result.stderr

    def test_the_script_is_the_same_command(self, database_url: str, tmp_path: Path) -> None:
        (tmp_path / "one.txt").write_text("The shim passes its arguments to memory-service ingest.")
        root = Path(__file__).resolve().parents[2]
        result = subprocess.run(
            [
                sys.executable,
                str(root / "scripts" / "ingest_documents.py"),
                str(tmp_path),
                "--namespace",
                "shim",
            ],
            env=env_for(database_url),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "1 documents: 1 ingested" in result.stderr
