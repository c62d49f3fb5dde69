"""`GET|POST /v1/admin/vllm`, `DELETE /v1/admin/vllm/{name}`: off by default, bearer-guarded."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from memory_service.providers.local import BUNDLED_MODEL_ID, bundled_model_path
from memory_service.serving.launcher import pid_alive
from tests.apps import free_port, http_app
from tests.fakes import FlakyProvider
from tests.serving.conftest import child_environ

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def admin(
    lifecycle_settings: Settings, embedder: FlakyProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The service opened with an admin token; started servers inherit this process's
    environment, which is given the fake `vllm` package (and nothing else of ours)."""
    monkeypatch.setenv("PYTHONPATH", child_environ()["PYTHONPATH"])
    settings = lifecycle_settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    async with (
        open_resources(settings, embedder=embedder) as opened,
        http_app(settings, opened) as http,
    ):
        yield http


def serve_body(**overrides: object) -> dict[str, object]:
    return {
        "model": str(bundled_model_path()),
        "served_model_name": BUNDLED_MODEL_ID,
        "runner": "pooling",
        "port": free_port(),
        **overrides,
    }


class TestAdminGuard:
    async def test_disabled_without_a_token(self, client: httpx.AsyncClient) -> None:
        for method, path in (("GET", ""), ("POST", ""), ("DELETE", "/x")):
            response = await client.request(method, f"/v1/admin/vllm{path}", headers=AUTH)
            assert response.status_code == 403
            assert response.json()["error"]["type"] == "admin_disabled"
            assert "MEMORY_ADMIN_TOKEN" in response.json()["error"]["message"]

    async def test_a_missing_or_wrong_token_is_401(self, admin: httpx.AsyncClient) -> None:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            response = await admin.get("/v1/admin/vllm", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "unauthorized"

    def test_a_short_token_is_refused_and_an_empty_one_means_off(self) -> None:
        with pytest.raises(ValidationError, match="at least 16"):
            Settings(admin_token="short")
        assert Settings(admin_token="").admin_token is None


class TestAdminActions:
    async def test_serve_status_stop(self, admin: httpx.AsyncClient, tmp_path: Path) -> None:
        assert (await admin.get("/v1/admin/vllm", headers=AUTH)).json() == []
        started = await admin.post("/v1/admin/vllm", json=serve_body(), headers=AUTH)
        assert started.status_code == 201, started.text
        registration = started.json()
        assert registration["name"] == BUNDLED_MODEL_ID
        assert registration["runner"] == "pooling"
        (status,) = (await admin.get("/v1/admin/vllm", headers=AUTH)).json()
        assert (status["alive"], status["healthy"]) == (True, True)
        again = await admin.post(
            "/v1/admin/vllm", json=serve_body(port=registration["port"]), headers=AUTH
        )
        assert again.status_code == 409
        stopped = await admin.delete(f"/v1/admin/vllm/{BUNDLED_MODEL_ID}", headers=AUTH)
        assert stopped.json() == {"name": BUNDLED_MODEL_ID, "outcome": "terminated"}
        assert not pid_alive(registration["pid"])
        assert (await admin.get("/v1/admin/vllm", headers=AUTH)).json() == []

    async def test_a_failed_start_is_503_with_the_log_tail(
        self, admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("VLLM_FAKE_EXIT", "4")
        response = await admin.post("/v1/admin/vllm", json=serve_body(), headers=AUTH)
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["type"] == "vllm_start_failed"
        assert "exited with status 4" in error["message"]
        assert error["details"]["exit_status"] == 4
        assert (await admin.get("/v1/admin/vllm", headers=AUTH)).json() == []

    async def test_bad_input_is_a_clear_4xx(self, admin: httpx.AsyncClient) -> None:
        invalid = await admin.post("/v1/admin/vllm", json=serve_body(runner="train"), headers=AUTH)
        assert invalid.status_code == 422
        assert invalid.json()["error"]["type"] == "validation_error"
        unknown = await admin.delete("/v1/admin/vllm/nobody", headers=AUTH)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["type"] == "not_found"
        traversal = await admin.delete("/v1/admin/vllm/..%2Fx", headers=AUTH)
        assert traversal.status_code in (400, 404)
