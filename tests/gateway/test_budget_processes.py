"""The cloud budget held across two `memory-service serve` processes and a restart."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apps import free_port
from tests.gateway.conftest import KEYS, ChatServers, chat_body, chat_providers_file, completions
from tests.memories.factories import assert_error
from tests.test_cli import COMMAND, clean_env, wait_until_healthy

pytestmark = pytest.mark.slow

DAILY_REQUESTS = 3


class Service:
    """One `memory-service serve` process on the shared database."""

    def __init__(self, database_url: str, providers: Path) -> None:
        self.port = free_port()
        env = clean_env(
            MEMORY_DATABASE_URL=database_url,
            MEMORY_PROVIDERS_FILE=str(providers),
            MEMORY_CHAT_CLOUD_DAILY_REQUESTS=str(DAILY_REQUESTS),
            MEMORY_RECONCILER="false",
            **KEYS,
        )
        log = providers.parent / f"serve-{self.port}.log"
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [COMMAND, "serve", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=out,
                text=True,
            )
        wait_until_healthy(self.port, self.process, log)

    def ask_cloud(self) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            json=chat_body(),
            headers={"X-Memory-Tier": "cloud"},
            timeout=30,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


@pytest.fixture
def providers(tmp_path: Path, chat_servers: ChatServers) -> Path:
    return chat_providers_file(tmp_path / "providers.yaml", chat_servers)


@pytest.fixture
def services(database_url: str, providers: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        started.append(Service(database_url, providers))
        started.append(Service(database_url, providers))
        yield started
    finally:
        for service in started:
            service.stop()


def test_two_processes_share_one_daily_budget_that_survives_a_restart(
    services: list[Service], database_url: str, providers: Path, chat_servers: ChatServers
) -> None:
    first, second = services
    chat_servers.groq.requests.clear()
    answers = [first.ask_cloud(), second.ask_cloud(), first.ask_cloud()]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    refused = [second.ask_cloud(), first.ask_cloud()]
    assert [r.status_code for r in refused] == [429, 429]
    error = assert_error(refused[0].json(), "budget_exhausted")
    assert error["details"]["requests"] == DAILY_REQUESTS
    assert completions(chat_servers.groq) == DAILY_REQUESTS

    first.stop()
    restarted = Service(database_url, providers)
    services.append(restarted)
    assert restarted.ask_cloud().status_code == 429
    assert completions(chat_servers.groq) == DAILY_REQUESTS
