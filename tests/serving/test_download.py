"""`memory-service models download|list|delete`, run as a user runs them, against the loopback hub.

The command runs in a child process: huggingface_hub reads HF_HUB_OFFLINE once, at import,
and the test process has it set (the bundled model is loaded offline), so a download here
would be refused. The child gets a clean environment with the hub's URL as
MEMORY_HUB_ENDPOINT and its own HF_HOME.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_service.providers.local import bundled_model_path
from tests.apps import free_port
from tests.servers.hub_server import HubServer

BUNDLED_ID = "sentence-transformers/all-MiniLM-L6-v2"
SMALL_ID = "acme/tiny-embedder"
TEN_MIB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-embedder")
    (folder / "config.json").write_text('{"hidden_size": 8}\n')
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8192)  # 2 MiB, LFS
    return folder


@pytest.fixture(scope="module")
def hub_server(small_repo: Path) -> Iterator[HubServer]:
    with HubServer({BUNDLED_ID: bundled_model_path(), SMALL_ID: small_repo}) as server:
        yield server


@pytest.fixture
def hub(hub_server: HubServer) -> HubServer:
    for server in (hub_server, hub_server.cdn):
        server.requests.clear()
    return hub_server


def models_command(
    data_dir: Path, endpoint: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MEMORY_", "HF_", "TRANSFORMERS_OFFLINE"))
    }
    environ |= {
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_HUB_ENDPOINT": endpoint,
        "HF_HOME": str(data_dir / "hf-home"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "memory_service.cli", "models", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def manifest(data_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((data_dir / "models" / "manifest.json").read_text())
    return loaded


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and ".cache" not in path.relative_to(folder).parts
    }


class TestDownload:
    def test_download_resumes_a_dropped_file_and_records_the_model(
        self, hub: HubServer, tmp_path: Path
    ) -> None:
        hub.cdn.cut_next_body(after_bytes=2 * TEN_MIB + 12_345)
        done = models_command(tmp_path, hub.url, "download", BUNDLED_ID, "--task", "embed")
        assert done.returncode == 0, done.stderr
        folder = tmp_path / "models" / "sentence-transformers--all-MiniLM-L6-v2"
        assert files_of(folder) == files_of(bundled_model_path())
        blob_gets = hub.cdn.requests.matching(method="GET")
        assert len(blob_gets) == 2
        assert "range" not in blob_gets[0].headers
        resumed_at = blob_gets[1].headers["range"]
        assert resumed_at.startswith("bytes=") and resumed_at.endswith("-")
        assert 0 < int(resumed_at[len("bytes=") : -1]) <= 2 * TEN_MIB + 12_345
        (entry,) = manifest(tmp_path)["models"]
        assert entry["id"] == BUNDLED_ID
        assert entry["revision"] == hub.repos[BUNDLED_ID].commit
        assert entry["path"] == str(folder)
        assert entry["size_bytes"] == sum(map(len, files_of(bundled_model_path()).values()))
        assert entry["task"] == "embed"
        assert entry["last_used_at"] is None

    def test_a_rerun_fetches_only_what_is_missing(self, hub: HubServer, tmp_path: Path) -> None:
        first = models_command(tmp_path, hub.url, "download", SMALL_ID, "--task", "chat")
        assert first.returncode == 0, first.stderr
        folder = tmp_path / "models" / "acme--tiny-embedder"
        (folder / "config.json").unlink()
        hub.requests.clear()
        hub.cdn.requests.clear()
        again = models_command(tmp_path, hub.url, "download", SMALL_ID, "--task", "chat")
        assert again.returncode == 0, again.stderr
        fetched = [r.path.rsplit("/", 1)[-1] for r in hub.requests.matching(method="GET")]
        assert fetched.count("config.json") == 1  # the top-level one, gone from disk
        assert "1_Pooling" not in " ".join(r.path for r in hub.requests.matching(method="GET"))
        assert hub.cdn.requests.count() == 0
        assert (folder / "config.json").read_text() == '{"hidden_size": 8}\n'

    def test_list_then_delete(self, hub: HubServer, tmp_path: Path) -> None:
        downloaded = models_command(tmp_path, hub.url, "download", SMALL_ID, "--task", "embed")
        assert downloaded.returncode == 0, downloaded.stderr
        listed = models_command(tmp_path, hub.url, "list")
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == ["id", "task", "size", "revision", "last", "used", "path"]
        assert row.split()[:4] == [SMALL_ID, "embed", "2.0", "MiB"]
        assert hub.repos[SMALL_ID].commit[:12] in row
        path = models_command(tmp_path, hub.url, "path", SMALL_ID)
        assert path.stdout.strip() == str(tmp_path / "models" / "acme--tiny-embedder")
        assert manifest(tmp_path)["models"][0]["last_used_at"] is not None
        deleted = models_command(tmp_path, hub.url, "delete", SMALL_ID)
        assert deleted.returncode == 0, deleted.stderr
        assert not (tmp_path / "models" / "acme--tiny-embedder").exists()
        assert manifest(tmp_path)["models"] == []
        assert models_command(tmp_path, hub.url, "list").stdout.startswith("no models in")


class TestDownloadErrors:
    def test_offline_mode_names_the_model_and_what_to_do(
        self, hub: HubServer, tmp_path: Path
    ) -> None:
        done = models_command(
            tmp_path, hub.url, "download", SMALL_ID, "--task", "embed", HF_HUB_OFFLINE="1"
        )
        assert done.returncode == 1
        assert f"cannot download {SMALL_ID}: offline mode is on" in done.stderr
        assert "Unset it" in done.stderr
        assert hub.requests.count() == 0
        assert not (tmp_path / "models" / "manifest.json").exists()

    def test_an_unreachable_hub_is_a_clear_error(self, tmp_path: Path) -> None:
        nowhere = f"http://127.0.0.1:{free_port()}"
        done = models_command(tmp_path, nowhere, "download", SMALL_ID, "--task", "embed")
        assert done.returncode == 1
        assert f"cannot download {SMALL_ID}: the hub {nowhere} is unreachable" in done.stderr
        assert "ConnectError" in done.stderr
        assert not (tmp_path / "models" / "manifest.json").exists()

    def test_an_unknown_model_or_revision_is_named(self, hub: HubServer, tmp_path: Path) -> None:
        missing = models_command(tmp_path, hub.url, "download", "acme/nope", "--task", "embed")
        assert missing.returncode == 1
        assert f"no model acme/nope on {hub.url}" in missing.stderr
        revision = models_command(
            tmp_path, hub.url, "download", SMALL_ID, "--task", "embed", "--revision", "v9"
        )
        assert revision.returncode == 1
        assert f"{SMALL_ID} has no revision 'v9'" in revision.stderr
        assert not (tmp_path / "models" / "manifest.json").exists()
