"""`memory-service vllm serve` launching a real vLLM, and a service's discovery picking it up.

Opt-in with the rest of tests/vllm (`make test-vllm`): it starts its own vLLM (40-110 s on
two cores) from `.venv-vllm`, serving the bundled model folder as the embedded default's
space model, so the running discovery must find it eligible (parity with the local model).
"""

import subprocess
import sys
from pathlib import Path

import httpx

from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from memory_service.providers.local import BUNDLED_MODEL_ID, LocalProvider, bundled_model_path
from memory_service.serving.launcher import is_vllm_server, pid_alive, terminate_group
from memory_service.serving.registrations import read_registrations
from tests.apps import free_port
from tests.serving.conftest import watcher_of
from tests.vllm.conftest import MAX_MODEL_LEN, VLLM_PYTHON

KV_CACHE_BYTES = str(256 * 1024 * 1024)  # see tests/vllm/conftest.py SERVER_FLAGS


def memory_service(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "MEMORY_DATA_DIR": str(settings.data_dir),
        "MEMORY_VLLM_PYTHON": str(VLLM_PYTHON),
        "MEMORY_VLLM_HEALTH_TIMEOUT_SECONDS": "300",
    }
    return subprocess.run(
        [sys.executable, "-m", "memory_service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


class TestVllmServeCommand:
    async def test_serve_registers_a_real_vllm_that_discovery_picks_up(
        self, settings: Settings, local_provider: LocalProvider
    ) -> None:
        served = memory_service(
            settings,
            *("vllm", "serve", "--model", str(bundled_model_path())),
            *("--served-model-name", BUNDLED_MODEL_ID, "--runner", "pooling"),
            *("--port", str(free_port()), "--"),
            *("--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN)),
            *("--kv-cache-memory-bytes", KV_CACHE_BYTES),
        )
        try:
            assert served.returncode == 0, served.stderr
            (registration,) = read_registrations(settings.vllm_dir)
            async with (
                open_resources(settings, local=local_provider) as resources,
                httpx.AsyncClient() as http,
            ):
                providers = resources.providers
                assert providers is not None
                await watcher_of(resources, settings, http).sync()
                await providers.probe_all()
                best = providers.embed.best()
                assert best is not None and best.name == f"managed-{BUNDLED_MODEL_ID}"
                assert best.parity is not None and best.parity >= 0.999
            stopped = memory_service(settings, "vllm", "stop", BUNDLED_MODEL_ID)
            assert stopped.stdout.strip().endswith(("terminated", "killed")), stopped.stderr
            assert not pid_alive(registration.pid)
        finally:
            for left in read_registrations(settings.vllm_dir):
                if is_vllm_server(left.pid):
                    terminate_group(left.pid, 30)
