"""Document ingestion in a space whose only provider is remote (a vLLM-compatible server),
chunked with the model's tokenizer files (`MEMORY_TOKENIZER_PATH`)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources, open_resources
from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.providers.local import LocalProvider, bundled_model_path
from tests.apps import http_app
from tests.documents.test_endpoints import TEXT
from tests.servers import OpenAICompatServer

MAX_TOKENS = 48


def remote_only(path: Path, vllm_url: str) -> Path:
    path.write_text(
        f"""
spaces:
  default: {{model: all-MiniLM-L6-v2, dimension: 384, normalized: true}}
providers:
  - {{name: vllm, kind: vllm, base_url: "{vllm_url}", model: all-MiniLM-L6-v2,
      space: default, priority: 10, connect_timeout: 0.5, read_timeout: 10.0, max_batch: 64}}
"""
    )
    return path


def remote_settings(database_url: str, tmp_path: Path, vllm_url: str, **fields: object) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        providers_file=remote_only(tmp_path / "providers.yaml", vllm_url),
        reconciler=False,
        ingest_worker=False,
        probe_interval_seconds=3600,
        chunk_max_tokens=MAX_TOKENS,
        chunk_overlap_tokens=8,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
async def resources(
    database_url: str, tmp_path: Path, vllm: OpenAICompatServer
) -> AsyncIterator[Resources]:
    settings = remote_settings(
        database_url, tmp_path, vllm.url, tokenizer_path=bundled_model_path()
    )
    async with open_resources(settings) as opened:
        yield opened


class TestRemoteOnlySpace:
    async def test_documents_are_chunked_with_the_tokenizer_files_and_embedded_remotely(
        self,
        resources: Resources,
        local_provider: LocalProvider,
        vllm: OpenAICompatServer,
        database_url: str,
        tmp_path: Path,
    ) -> None:
        assert resources.documents is not None, resources.documents_unavailable
        settings = remote_settings(database_url, tmp_path, vllm.url)
        vllm.requests.clear()
        async with http_app(settings, resources) as client:
            response = await client.post(
                "/v1/documents", json={"namespace": "docs", "text": TEXT, "source_uri": "kb:1"}
            )
        assert response.status_code == 201, response.text
        assert response.json()["chunks"] >= 3
        assert vllm.requests.count("/v1/embeddings", "POST") > 0, "embedded by the server"
        async with resources.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT text, token_count FROM chunk"))).all()
        counts = await local_provider.count_tokens([body for body, _ in rows])
        assert counts == [tokens for _, tokens in rows], "the model's own counts"
        assert max(counts) <= MAX_TOKENS

    async def test_without_tokenizer_files_ingestion_says_what_to_set(
        self, database_url: str, tmp_path: Path, vllm: OpenAICompatServer
    ) -> None:
        settings = remote_settings(database_url, tmp_path, vllm.url)
        async with (
            open_resources(settings) as opened,
            http_app(settings, opened) as client,
        ):
            assert opened.documents is None
            response = await client.post("/v1/documents", json={"namespace": "d", "text": "Hi."})
        assert response.status_code == 503, "the service's configuration, not the input"
        error = response.json()["error"]
        assert error["type"] == "service_unavailable"
        assert "MEMORY_TOKENIZER_PATH" in error["message"]

    async def test_a_tokenizer_path_that_cannot_be_read_refuses_to_start(
        self, database_url: str, tmp_path: Path, vllm: OpenAICompatServer
    ) -> None:
        """Like every other configuration fault, and unlike a service with no tokenizer set
        at all (which runs, and answers 503 for documents)."""
        empty = tmp_path / "no-tokenizer-here"
        empty.mkdir()
        settings = remote_settings(database_url, tmp_path, vllm.url, tokenizer_path=empty)
        with pytest.raises(StartupError, match=r"MEMORY_TOKENIZER_PATH: no tokenizer\.json in"):
            async with open_resources(settings):
                pytest.fail("resources opened with a tokenizer folder that has no tokenizer")
