"""`vllm serve|status|stop`: real child processes speaking vLLM's protocol, real discovery.

The child is `python -m vllm.entrypoints.openai.api_server` with a fake `vllm` package on its
PYTHONPATH (tests/serving/fake_vllm): vLLM's flags, the loopback vLLM wire, the bundled model.
"""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from memory_service.bootstrap import Resources, open_resources
from memory_service.core.errors import Conflict, InvalidRequest
from memory_service.core.settings import Settings
from memory_service.providers.local import BUNDLED_MODEL_ID, LocalProvider, bundled_model_path
from memory_service.serving.errors import VllmStartFailed
from memory_service.serving.launcher import pid_alive
from memory_service.serving.lifecycle import VllmManager
from memory_service.serving.manifest import ModelEntry, ModelRegistry
from memory_service.serving.registrations import read_registrations
from memory_service.serving.schemas import ServeRequest
from tests.apps import free_port
from tests.serving.conftest import child_environ, watcher_of

MANAGED = f"managed-{BUNDLED_MODEL_ID}"


@pytest.fixture
async def discovering(
    lifecycle_settings: Settings, local_provider: LocalProvider
) -> AsyncIterator[Resources]:
    """A service's resources with discovery over the bundled model (the embedded default)."""
    async with open_resources(lifecycle_settings, local=local_provider) as resources:
        yield resources


def pooling_request(model: str, **overrides: object) -> ServeRequest:
    fields: dict[str, object] = {
        "model": model,
        "served_model_name": BUNDLED_MODEL_ID,
        "runner": "pooling",
        "port": free_port(),
        "extra_args": ["--dtype", "float32", "--max-model-len", "256"],
    }
    return ServeRequest.model_validate(fields | overrides)


class TestServeDiscoverStop:
    async def test_a_served_pooling_model_joins_discovery_until_stopped(
        self, lifecycle_settings: Settings, discovering: Resources, tmp_path: Path
    ) -> None:
        record = tmp_path / "child.json"
        secrets = {
            "MEMORY_ADMIN_TOKEN": "admin-token-0123456789",
            "MEMORY_DATABASE_URL": "postgresql://memory:memory@db/memory",
            "GROQ_API_KEY": "gsk_test",
            "VLLM_API_KEY": "vllm-server-key",
            "AWS_SECRET_ACCESS_KEY": "aws",
        }
        environ = child_environ(VLLM_FAKE_RECORD=str(record), **secrets)
        manager = VllmManager(lifecycle_settings, environ)
        registry = ModelRegistry(lifecycle_settings.model_registry_dir)
        registry.record(
            ModelEntry(
                id="sentence-transformers/all-MiniLM-L6-v2",
                revision="c" * 40,
                path=bundled_model_path(),
                size_bytes=1,
                task="embed",
                downloaded_at=datetime.now(UTC),
            )
        )
        registration = await manager.serve(
            pooling_request("sentence-transformers/all-MiniLM-L6-v2")
        )
        assert registry.get("sentence-transformers/all-MiniLM-L6-v2").last_used_at is not None
        child = json.loads(record.read_text())
        assert child["pid"] == registration.pid
        assert child["argv"][:2] == ["--model", str(bundled_model_path())]
        assert child["argv"][4:8] == ["--runner", "pooling", "--convert", "embed"]
        assert child["argv"][-4:] == ["--dtype", "float32", "--max-model-len", "256"]
        assert child["env"] == {"HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0"}
        assert not set(secrets) & set(child["names"]), "an explicit, minimal environment"
        assert {"PATH", "PYTHONPATH", "VLLM_FAKE_RECORD"} <= set(child["names"])
        assert read_registrations(lifecycle_settings.vllm_dir) == [registration]
        assert registration.space == "default"
        assert (registration.log_dir / "stderr.log").read_text().startswith("INFO fake vLLM")

        providers = discovering.providers
        assert providers is not None
        async with httpx.AsyncClient() as http:
            watcher = watcher_of(discovering, lifecycle_settings, http)
            await watcher.sync()
            await providers.probe_all()
            best = providers.embed.best()
            assert best is not None and best.name == MANAGED
            assert best.config.kind == "vllm"
            assert best.parity is not None and best.parity >= 0.99

            (status,) = await manager.status()
            assert (status.alive, status.healthy) == (True, True)

            stopped = manager.stop(registration.name)
            assert stopped.outcome == "terminated"
            assert not pid_alive(registration.pid)
            assert read_registrations(lifecycle_settings.vllm_dir) == []
            await watcher.sync()
            assert [p.name for p in providers.embed.providers] == ["local"]

    async def test_a_registration_of_another_space_is_ignored(
        self, lifecycle_settings: Settings, discovering: Resources
    ) -> None:
        from memory_service.serving.registrations import VllmRegistration, write_registration

        write_registration(
            lifecycle_settings.vllm_dir,
            VllmRegistration(
                name="other",
                pid=1,
                port=9,
                base_url="http://127.0.0.1:9",
                served_model="mxbai-embed-large",
                model="/models/mxbai",
                runner="pooling",
                space="mxbai",
                started_at=datetime.now(UTC),
                log_dir=lifecycle_settings.vllm_dir / "other",
            ),
        )
        providers = discovering.providers
        assert providers is not None
        async with httpx.AsyncClient() as http:
            await watcher_of(discovering, lifecycle_settings, http).sync()
        assert [p.name for p in providers.embed.providers] == ["local"]


class TestServeFailures:
    async def test_a_child_that_dies_at_start_fails_fast_with_its_log_tail(
        self, lifecycle_settings: Settings
    ) -> None:
        # The health bound is ten minutes: only the exit can end the wait in time for the test.
        settings = lifecycle_settings.model_copy(update={"vllm_health_timeout_seconds": 600.0})
        manager = VllmManager(settings, child_environ(VLLM_FAKE_EXIT="3"))
        with pytest.raises(VllmStartFailed) as failed:
            await manager.serve(pooling_request(str(bundled_model_path())))
        assert "exited with status 3" in failed.value.message
        assert "ValueError: cannot load model" in failed.value.message
        assert read_registrations(settings.vllm_dir) == []

    async def test_a_server_that_never_answers_health_is_stopped_at_the_bound(
        self, lifecycle_settings: Settings, tmp_path: Path
    ) -> None:
        settings = lifecycle_settings.model_copy(update={"vllm_health_timeout_seconds": 1.5})
        record = tmp_path / "child.json"
        environ = child_environ(VLLM_FAKE_NEVER_HEALTHY="1", VLLM_FAKE_RECORD=str(record))
        with pytest.raises(VllmStartFailed) as failed:
            await VllmManager(settings, environ).serve(pooling_request(str(bundled_model_path())))
        assert "did not answer" in failed.value.message
        assert "INFO fake vLLM" in failed.value.message
        assert not pid_alive(json.loads(record.read_text())["pid"])
        assert read_registrations(settings.vllm_dir) == []

    async def test_unknown_model_and_busy_port_are_refused_before_starting(
        self, lifecycle_settings: Settings, tmp_path: Path
    ) -> None:
        record = tmp_path / "child.json"
        manager = VllmManager(lifecycle_settings, child_environ(VLLM_FAKE_RECORD=str(record)))
        with pytest.raises(InvalidRequest, match="models download org/unknown"):
            await manager.serve(pooling_request("org/unknown"))
        import socket

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            with pytest.raises(Conflict, match=f"port {port}"):
                await manager.serve(pooling_request(str(bundled_model_path()), port=port))
        assert not record.exists()

    async def test_a_bad_name_is_refused(self, lifecycle_settings: Settings) -> None:
        manager = VllmManager(lifecycle_settings, child_environ())
        request = pooling_request(str(bundled_model_path()), served_model_name="org/model")
        with pytest.raises(InvalidRequest, match="pass --name"):
            await manager.serve(request)


class TestGenerateServers:
    async def test_a_served_chat_model_joins_chat_routing_until_stopped(
        self, lifecycle_settings: Settings, discovering: Resources
    ) -> None:
        manager = VllmManager(lifecycle_settings, child_environ())
        registration = await manager.serve(
            ServeRequest.model_validate(
                {
                    "model": str(bundled_model_path()),
                    "served_model_name": "tiny-chat",
                    "runner": "generate",
                    "port": free_port(),
                    "extra_args": ["--max-model-len", "1024"],
                }
            )
        )
        providers, chat = discovering.providers, discovering.chat
        assert providers is not None and chat is not None
        async with httpx.AsyncClient() as http:
            watcher = watcher_of(discovering, lifecycle_settings, http)
            await watcher.sync()
            await providers.probe_all()
            best = providers.chat.best()
            assert best is not None and best.name == "managed-tiny-chat"
            assert (best.tier, best.config.context_window) == ("local", 1024)
            assert chat.aliases["tiny-chat"] == ["managed-tiny-chat"]
            assert providers.embed.best() is not None  # embedders untouched
            assert all(p.name != "managed-tiny-chat" for p in providers.embed.providers)

            manager.stop(registration.name)
            await watcher.sync()
            assert all(p.name != "managed-tiny-chat" for p in providers.chat.providers)
