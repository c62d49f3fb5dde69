"""`MEMORY_AUTH` resolved for the listening address, the Host allow-list that guards a
service without keys, and the OpenAI SDK with and without a key."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from memory_service.auth.mode import is_loopback, resolve
from memory_service.bootstrap import Resources, open_resources
from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.providers.local import LocalProvider
from tests.apps import http_app, served_app
from tests.fakes import FlakyProvider
from tests.memories.factories import assert_error, memory_body
from tests.test_cli import clean_env, run


class TestResolve:
    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
    def test_auto_is_off_on_loopback(self, host: str) -> None:
        assert is_loopback(host) and resolve("auto", host, allow_open=False) == "off"

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "memory.example"])
    def test_auto_is_required_beyond_loopback(self, host: str) -> None:
        assert resolve("auto", host, allow_open=False) == "required"

    def test_required_stays_required_on_loopback(self) -> None:
        assert resolve("required", "127.0.0.1", allow_open=False) == "required"

    def test_off_beyond_loopback_is_refused_unless_allowed_and_then_warned(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with pytest.raises(StartupError, match="MEMORY_AUTH_ALLOW_OPEN=1"):
            resolve("off", "0.0.0.0", allow_open=False)
        with caplog.at_level(logging.WARNING):
            assert resolve("off", "0.0.0.0", allow_open=True) == "off"
        assert "authentication is OFF on 0.0.0.0" in caplog.text

    def test_serve_refuses_an_open_non_loopback_address_before_binding(
        self, settings: Settings
    ) -> None:
        assert settings.database_url is not None
        env = clean_env(MEMORY_DATABASE_URL=settings.database_url, MEMORY_AUTH="off")
        served = run(["serve", "--host", "0.0.0.0", "--port", "9"], env)
        assert served.returncode == 2
        assert "MEMORY_AUTH=off on 0.0.0.0" in served.stderr


class TestHostAllowList:
    """With no key asked for, a foreign Host (a DNS-rebinding page) is refused."""

    @pytest.mark.parametrize(
        "host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example"]
    )
    async def test_a_foreign_host_is_refused_and_changes_nothing(
        self, client: httpx.AsyncClient, resources: Resources, host: str
    ) -> None:
        body = memory_body("Planted through a rebinding page.")
        response = await client.post("/v1/memories", json=body, headers={"Host": host})
        assert response.status_code == 400
        assert assert_error(response.json(), "invalid_host")["details"]["allowed"]
        listed = await client.get("/v1/memories", params={"namespace": "agent-1"})
        assert listed.json()["items"] == []

    @pytest.mark.parametrize(
        "host", ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080"]
    )
    async def test_the_users_own_hosts_pass(self, client: httpx.AsyncClient, host: str) -> None:
        response = await client.get("/v1/memories?namespace=a", headers={"Host": host})
        assert response.status_code == 200, response.text

    async def test_with_keys_required_the_host_is_not_what_guards(
        self, settings: Settings, embedder: FlakyProvider
    ) -> None:
        required = settings.model_copy(update={"auth": "required"})
        async with (
            open_resources(required, embedder=embedder) as opened,
            http_app(required, opened) as client,
        ):
            response = await client.get("/v1/models", headers={"Host": "memory.example"})
        assert response.status_code == 401


class TestDocs:
    async def test_docs_follow_their_setting(
        self, settings: Settings, resources: Resources
    ) -> None:
        async with http_app(settings, resources) as client:
            assert (await client.get("/openapi.json")).status_code == 200
        hidden = settings.model_copy(update={"api_docs": False})
        async with http_app(hidden, resources) as client:
            assert (await client.get("/openapi.json")).status_code == 404
            assert (await client.get("/docs")).status_code == 404


@pytest.fixture
async def keyed(
    settings: Settings, tmp_path: Path, local_provider: LocalProvider
) -> AsyncIterator[tuple[str, str]]:
    """A service on a real socket that requires keys, and a key that may embed."""
    required = settings.model_copy(update={"auth": "required"})
    async with open_resources(required, local=local_provider) as opened:
        _, key = await opened.auth.keys.create(name="sdk", namespaces=["*"], scopes=["embed"])
        async with served_app(required, opened) as url:
            yield url, key


class TestOpenAISDK:
    async def test_the_sdk_passes_the_key_as_api_key(self, keyed: tuple[str, str]) -> None:
        url, key = keyed
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        try:
            answer = await client.embeddings.create(model="all-MiniLM-L6-v2", input="tea")
        finally:
            await client.close()
        assert len(answer.data[0].embedding) == 384

    @pytest.mark.parametrize("api_key", ["not-a-key", "msk_aaaaaaaaaaaa_wrong"])
    async def test_without_a_valid_key_the_sdk_fails_cleanly(
        self, keyed: tuple[str, str], api_key: str
    ) -> None:
        url, _ = keyed
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
        try:
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.embeddings.create(model="all-MiniLM-L6-v2", input="tea")
        finally:
            await client.close()
        assert raised.value.status_code == 401


class TestAnonymousWrites:
    async def test_with_authentication_off_no_key_is_recorded(
        self, client: httpx.AsyncClient
    ) -> None:
        stored = await client.post("/v1/memories", json=memory_body("Written with no key."))
        assert stored.status_code == 201, stored.text
        assert stored.json()["created_by"] is None and stored.json()["updated_by"] is None


class TestInputContract:
    """What PostgreSQL cannot store is refused whole before any route runs, naming the
    field; what slips past that and is refused by the database is a 422 too, and neither
    the value nor the statement reaches the answer or the log."""

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b'{"namespace": "a", "content": "x\\u0000y"}', "content"),
            (b'{"namespace": "a", "content": "x", "metadata": {"ssn": "123-45\\u00006789"}}',
             "metadata.ssn"),
            (b'{"namespace": "a", "content": "x", "metadata": {"k\\u0000": 1}}',
             "metadata.k\\u0000"),
            (b'{"namespace": "a", "content": "\\ud800 alone"}', "content"),
            (b'{"namespace": "a", "content": "x", "metadata": {"n": NaN}}', "metadata.n"),
            (b'{"namespace": "a", "content": "x", "metadata": {"n": 1e400}}', "metadata.n"),
        ],
    )  # fmt: skip
    async def test_unstorable_values_are_422_naming_the_field(
        self,
        client: httpx.AsyncClient,
        body: bytes,
        field: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        headers = {"content-type": "application/json"}
        with caplog.at_level(logging.INFO):
            response = await client.post("/v1/memories", content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert assert_error(response.json(), "invalid_value")["details"]["field"] == field
        assert "123-45" not in response.text + caplog.text
        listed = await client.get("/v1/memories", params={"namespace": "a"})
        assert listed.json()["items"] == []

    async def test_a_time_outside_utc_years_is_422(self, client: httpx.AsyncClient) -> None:
        body = memory_body("Expires never.", expires_at="9999-12-31T23:00:00-05:00")
        response = await client.post("/v1/memories", json=body)
        assert response.status_code == 422
        assert "outside years 1-9999" in response.text

    async def test_an_oversized_body_is_413_before_it_is_parsed(
        self, settings: Settings, resources: Resources
    ) -> None:
        small = settings.model_copy(
            update={"limits": settings.limits.model_copy(update={"max_body_bytes": 2048})}
        )
        async with http_app(small, resources) as client:
            big = memory_body("x" * 4096)
            response = await client.post("/v1/memories", json=big)
            fits = await client.post("/v1/memories", json=memory_body("fits"))
        assert response.status_code == 413
        assert assert_error(response.json(), "payload_too_large")["details"] == {"limit": 2048}
        assert fits.status_code == 201

    async def test_a_value_the_database_refuses_is_422_without_the_value(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A NUL in a path segment passes the JSON contract; PostgreSQL text cannot hold it."""
        with caplog.at_level(logging.INFO, logger="memory_service"):
            response = await client.delete("/v1/admin/keys/secret%00name")
        assert response.status_code == 422, response.text
        assert assert_error(response.json(), "invalid_value")["message"] == (
            "the database refused a value of this request"
        )
        service_log = [r.getMessage() for r in caplog.records if r.name.startswith("memory_")]
        assert any("/v1/admin/keys/{id_or_name}" in line for line in service_log)
        assert "secret" not in response.text and not any("secret" in line for line in service_log)


class TestLogHygiene:
    async def test_an_unstorable_value_is_refused_without_a_trace_of_it(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A NUL character in jsonb: refused by the input contract before any statement
        (the worker's error-id test covers a failure inside a statement); neither the
        answer nor the log holds the value."""
        body = memory_body("Note with a bad metadata value.", metadata={"ssn": "123-45\u00006789"})
        with caplog.at_level(logging.INFO):
            response = await client.post("/v1/memories", json=body)
        assert response.status_code == 422
        assert "123-45" not in response.text and "INSERT" not in response.text
        for leaked in ("123-45", "INSERT INTO", "[SQL:", "Note with a bad metadata"):
            assert leaked not in caplog.text, leaked
