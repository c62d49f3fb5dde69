"""Stopping `memory-service serve` (SIGTERM) while a chat stream is open: the stream ends at
once with an error event, and the process exits; nothing waits for the upstream."""

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.apps import free_port
from tests.gateway.conftest import KEYS, ChatServers, chat_body, chat_providers_file
from tests.test_cli import COMMAND, clean_env, wait_until_healthy

pytestmark = pytest.mark.slow

# The upstream would keep the stream open this long; only a shutdown that waits for it
# takes that long. Bounds below are far under it and far over a clean stop.
UPSTREAM_READ_TIMEOUT = 300
WEDGED_SECONDS = 60


def test_sigterm_ends_an_open_stream_with_an_error_event_and_exits(
    tmp_path: Path, database_url: str, chat_servers: ChatServers
) -> None:
    providers = chat_providers_file(tmp_path / "providers.yaml", chat_servers)
    providers.write_text(
        providers.read_text().replace("read_timeout: 2", f"read_timeout: {UPSTREAM_READ_TIMEOUT}")
    )
    port = free_port()
    env = clean_env(
        MEMORY_DATABASE_URL=database_url,
        MEMORY_PROVIDERS_FILE=str(providers),
        MEMORY_RECONCILER="false",
        MEMORY_SHUTDOWN_TIMEOUT_SECONDS="5",
        **KEYS,
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [COMMAND, "serve", "--port", str(port)], env=env, stdout=out, stderr=out, text=True
        )
    try:
        wait_until_healthy(port, process, log)
        chat_servers.vllm.faults.stream_stall()  # two words, then silence
        events: list[str] = []
        with (
            httpx.Client(timeout=WEDGED_SECONDS) as client,
            client.stream(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=chat_body("stall", stream=True),
            ) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line.removeprefix("data: "))
                if len(events) == 3:  # the role chunk and two words: the upstream stalls
                    process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has stopped: 128 + SIGTERM, as shells report.
        assert process.wait(timeout=WEDGED_SECONDS) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    error = json.loads(events[-2])["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", 503)
    assert "shutting down" in error["message"]
    assert events[-1] == "[DONE]"
