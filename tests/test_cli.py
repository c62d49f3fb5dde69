"""End to end: the real `memory-service` command, as a user runs it.

These start real processes (the embedded PostgreSQL, the model, uvicorn), so they take
tens of seconds; they are the proof that `make run` and the README work as written.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apps import free_port

ROOT = Path(__file__).resolve().parents[1]
COMMAND = str(Path(sys.executable).parent / "memory-service")
STARTUP_LIMIT_SECONDS = 180.0

pytestmark = pytest.mark.slow


def clean_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEMORY_")}
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server_env() -> dict[str, str]:
    """What the served process's environment adds (a test may require keys)."""
    return {}


@pytest.fixture
def server(
    data_dir: Path, server_env: dict[str, str]
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    log = data_dir.parent / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [COMMAND, "serve", "--port", str(port)],
            env=clean_env(MEMORY_DATA_DIR=str(data_dir), **server_env),
            stdout=out,
            stderr=out,
            text=True,
        )
    try:
        wait_until_healthy(port, process, log)
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """`memory-service serve` on a free port, its output in `log` (a pipe nobody reads
    would fill and wedge it), stopped with SIGINT; its URL."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [COMMAND, "serve", "--port", str(port)], env=env, stdout=out, stderr=out, text=True
        )
    try:
        wait_until_healthy(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def wait_until_healthy(port: int, process: subprocess.Popen[str], log: Path | None = None) -> None:
    """Poll /health until it answers; bounded, and fails fast if the process dies, with its
    output (from `log`, or its stdout pipe)."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if log is not None:
                output = log.read_text()
            else:
                output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"serve exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail("serve did not answer /health in time")


def readme_walkthrough(marker: str = "walkthrough") -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        rf"<!-- {marker}:start -->\s*```bash\n(.*?)```\s*<!-- {marker}:end -->",
        readme,
        re.DOTALL,
    )
    assert match, f"README has no {marker} block"
    return match.group(1)


class TestEmbeddedServe:
    def test_readme_walkthrough_recalls_the_right_memory_first(
        self, server: tuple[int, subprocess.Popen[str]]
    ) -> None:
        port, _ = server
        script = readme_walkthrough()
        assert script.count("localhost:8080") == 4
        result = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script.replace("localhost:8080", f"localhost:{port}"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        *stores, search = [json.loads(line) for line in result.stdout.splitlines()]
        assert [store["created"] for store in stores] == [True, True, True]
        assert {store["status"] for store in stores} == {"embedded"}
        assert search["embedding_model"] == "all-MiniLM-L6-v2"
        assert "coffee" in search["results"][0]["content"]
        assert search["results"][0]["score"] > search["results"][1]["score"] + 0.2

    def test_processes_share_the_embedded_server_and_it_stops_with_the_last(
        self, server: tuple[int, subprocess.Popen[str]], data_dir: Path
    ) -> None:
        port, process = server
        current = run(["db", "current"], clean_env(MEMORY_DATA_DIR=str(data_dir)))
        assert current.returncode == 0, current.stderr
        assert "(at head)" in current.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200, "still serving"
        table = run(["providers", "--url", f"http://127.0.0.1:{port}"], clean_env())
        assert table.returncode == 0, table.stderr
        assert "best: local" in table.stdout
        assert re.search(
            r"^local\s+local\s+closed\s+\S+\s+\d+ ms\s+0\.00\s+1\.0000\s+eligible$",
            table.stdout,
            re.MULTILINE,
        ), table.stdout

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert not (data_dir / "pg" / "postmaster.pid").exists(), "the server stopped on exit"

    def test_a_changed_model_is_refused_at_start(
        self, server: tuple[int, subprocess.Popen[str]], data_dir: Path
    ) -> None:
        _, process = server
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        refused = run(
            ["serve", "--port", str(free_port())],
            clean_env(MEMORY_DATA_DIR=str(data_dir), MEMORY_LOCAL_MODEL_ID="mxbai-embed-large"),
        )
        assert refused.returncode == 2
        assert "all-MiniLM-L6-v2 (384-dim, normalized)" in refused.stderr
        assert "mxbai-embed-large (384-dim, normalized)" in refused.stderr
        assert "must never be mixed" in refused.stderr


class TestExternalDatabase:
    def test_serve_refuses_a_schema_behind_head_until_db_upgrade(
        self, empty_database_url: str
    ) -> None:
        env = clean_env(MEMORY_DATABASE_URL=empty_database_url)
        refused = run(["serve", "--port", str(free_port())], env)
        assert refused.returncode == 2
        assert "run `memory-service db upgrade`" in refused.stderr
        assert run(["db", "current"], env).returncode == 1

        upgraded = run(["db", "upgrade"], env)
        assert upgraded.returncode == 0, upgraded.stderr
        current = run(["db", "current"], env)
        assert current.returncode == 0
        assert "(at head)" in current.stdout


class TestKeyedServe:
    @pytest.fixture
    def server_env(self) -> dict[str, str]:
        return {"MEMORY_AUTH": "required"}

    def test_readme_walkthrough_with_keys(
        self, server: tuple[int, subprocess.Popen[str]], data_dir: Path
    ) -> None:
        """The README's second walkthrough, against a service that requires keys: the key
        made on its database works at once, and only on its namespace."""
        port, _ = server
        script = readme_walkthrough("walkthrough-keys")
        script = script.replace("localhost:8080", f"localhost:{port}")
        script = script.replace(".venv/bin/memory-service", COMMAND)
        assert f"localhost:{port}" in script and "8080" not in script
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=clean_env(MEMORY_DATA_DIR=str(data_dir)),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        stored, found, refused = [json.loads(line) for line in result.stdout.splitlines()]
        assert stored["created"] and stored["created_by"]["name"] == "demo-agent"
        assert found["results"][0]["content"] == "Black coffee."
        assert refused["error"]["type"] == "forbidden"
        anonymous = httpx.get(f"http://127.0.0.1:{port}/v1/memories?namespace=demo")
        assert anonymous.status_code == 401
