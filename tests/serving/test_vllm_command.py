"""`memory-service vllm serve|status|stop` as an operator runs them: the server outlives `serve`."""

import subprocess
import sys
from pathlib import Path

from memory_service.core.settings import Settings
from memory_service.providers.local import BUNDLED_MODEL_ID, bundled_model_path
from memory_service.serving.launcher import is_vllm_server, pid_alive, terminate_group
from memory_service.serving.registrations import read_registrations
from tests.apps import free_port
from tests.serving.conftest import child_environ


def vllm_command(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_environ(
        MEMORY_DATA_DIR=str(data_dir),
        MEMORY_VLLM_PYTHON=sys.executable,
        MEMORY_VLLM_CPU_THREADS_BIND="0",
    )
    return subprocess.run(
        [sys.executable, "-m", "memory_service.cli", "vllm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class TestVllmCommand:
    def test_serve_status_stop(self, tmp_path: Path) -> None:
        data_dir, port = tmp_path / "data", free_port()
        served = vllm_command(
            data_dir,
            "serve",
            "--model",
            str(bundled_model_path()),
            "--served-model-name",
            BUNDLED_MODEL_ID,
            "--runner",
            "pooling",
            "--port",
            str(port),
            "--",
            "--dtype",
            "float32",
        )
        try:
            assert served.returncode == 0, served.stderr
            assert served.stdout.startswith(f"{BUNDLED_MODEL_ID}: http://127.0.0.1:{port} pid ")
            (registration,) = read_registrations(Settings(data_dir=data_dir).vllm_dir)
            status = vllm_command(data_dir, "status")
            assert status.returncode == 0, status.stderr
            row = status.stdout.splitlines()[1].split()
            assert row[:5] == [
                BUNDLED_MODEL_ID,
                "pooling",
                BUNDLED_MODEL_ID,
                f"http://127.0.0.1:{port}",
                str(registration.pid),
            ]
            assert row[5:7] == ["yes", "yes"]
            stopped = vllm_command(data_dir, "stop", BUNDLED_MODEL_ID)
            assert stopped.stdout.strip() == f"{BUNDLED_MODEL_ID}: terminated"
            assert not pid_alive(registration.pid)
            assert vllm_command(data_dir, "status").stdout.strip() == "no vLLM servers registered"
        finally:
            for left in read_registrations(Settings(data_dir=data_dir).vllm_dir):
                if is_vllm_server(left.pid):
                    terminate_group(left.pid, 15)

    def test_stopping_an_unknown_server_is_an_error(self, tmp_path: Path) -> None:
        stopped = vllm_command(tmp_path / "data", "stop", "nobody")
        assert stopped.returncode == 1
        assert stopped.stderr.strip() == "error: no vLLM server named 'nobody' is registered"


class TestProductionEmbedderScript:
    def test_it_serves_mxbai_on_8001_with_the_pooling_runner(self) -> None:
        script = Path(__file__).resolve().parents[2] / "scripts" / "start_vllm_embed.sh"
        done = subprocess.run(
            [str(script), "--dtype", "float32"],
            env={"PATH": "/usr/bin:/bin", "MEMORY_SERVICE": "echo"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert done.stdout.split() == [
            "vllm",
            "serve",
            "--model",
            "mixedbread-ai/mxbai-embed-large-v1",
            "--served-model-name",
            "mxbai-embed-large",
            "--runner",
            "pooling",
            "--port",
            "8001",
            "--",
            "--max-model-len",
            "512",
            "--dtype",
            "float32",
        ]
