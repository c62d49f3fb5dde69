"""Shared set-up for the benchmarks: a throwaway embedded PostgreSQL, loopback providers
backed by the real bundled model, and the service itself on a real port.

Run benchmarks as modules from the repository root, e.g.
`.venv/bin/python -m scripts.bench.coalescing`; each prints its numbers and the command line
that reproduces them.
"""

import contextlib
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from memory_service.core import migrations
from memory_service.core.embedded import embedded_postgres


def command_line() -> str:
    module = Path(sys.argv[0]).resolve().relative_to(Path.cwd()).with_suffix("")
    args = " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    return f".venv/bin/python -m {'.'.join(module.parts)} {args}".strip()


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """An embedded PostgreSQL in a temporary folder, migrated; gone afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="memory-bench-") as folder,
        embedded_postgres(Path(folder), "bench") as url,
    ):
        migrations.upgrade(url)
        yield url


def providers_yaml(folder: Path, providers: Sequence[str]) -> Path:
    """A providers file for the bundled model's space with the given provider entries."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "providers.yaml"
    entries = "\n".join(f"  - {entry}" for entry in providers)
    path.write_text(
        "spaces:\n  default: {model: all-MiniLM-L6-v2, dimension: 384, normalized: true}\n"
        f"providers:\n{entries}\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def serve_process(database_url: str, **settings: str) -> Iterator[str]:
    """`memory-service serve` in its own process, as an operator runs it; yields its URL.

    `settings` are MEMORY_* variables without the prefix (e.g. providers_file=...).
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEMORY_")}
    env["MEMORY_DATABASE_URL"] = database_url
    env["MEMORY_LOG_LEVEL"] = "warning"
    env.update({f"MEMORY_{key.upper()}": value for key, value in settings.items()})
    command = [str(Path(sys.executable).parent / "memory-service"), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"memory-service serve exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("memory-service serve did not answer /health within 120 s")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


async def pending_memories(client: httpx.AsyncClient) -> int:
    """Memories still pending, as the service's `/metrics` reports them."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families((await client.get("/metrics")).text):
        if family.name == "memory_memories_unembedded":
            return int(sum(s.value for s in family.samples if s.labels["status"] == "pending"))
    raise SystemExit("no memory_memories_unembedded in /metrics")
