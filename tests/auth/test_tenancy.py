"""Tenancy over every route of the OpenAPI, with authentication required.

Two tenants (`alice`, `bob`), each with a key on its own namespace, plus bob's read-only
and write-only keys, an operator's key (`metrics`, `admin`), and an expired and a revoked
key. The route list is the app's own OpenAPI: a route without a case here fails the test,
so a new route cannot be forgotten.

For every route: no key, a malformed, an expired and a revoked key are refused (401);
every cross-tenant call (bob on alice's namespace or ids) is refused: 403 where bob names
the namespace, 404 where he names an id, exactly as for an unknown one; a key without the
route's scope is refused (403); and bob's own call, with the scope, still works.
"""

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from memory_service.app import create_app
from memory_service.bootstrap import Resources, open_resources
from memory_service.core.settings import Settings
from memory_service.documents.jobs.worker import job_worker
from memory_service.providers.local import LocalProvider
from tests.apps import http_app
from tests.memories.factories import assert_error
from tests.servers.chat_server import ChatServer

CHAT_MODEL = "llama-3.2-1b-instruct"
ALICE_SECRET = "Alice's locker code is 4417 and she hides the key under the blue pot."
OPEN_ROUTES = {("GET", "/health"), ("GET", "/ready")}
Request = tuple[str, str, dict[str, Any] | None]


@dataclass
class Tenants:
    client: httpx.AsyncClient
    resources: Resources
    keys: dict[str, str]
    alice_memory: str
    alice_job: str
    bob_job: str
    bodies: list[str] = field(default_factory=list)

    async def call(self, key: str | None, request: Request) -> httpx.Response:
        method, url, body = request
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        response = await self.client.request(method, url, json=body, headers=headers)
        self.bodies.append(response.text)
        return response

    async def bob_memory(self, content: str = "Bob likes green tea.") -> str:
        stored = await self.call(
            self.keys["bob"], ("POST", "/v1/memories", {"namespace": "bob", "content": content})
        )
        assert stored.status_code in (200, 201), stored.text
        memory_id: str = stored.json()["id"]
        return memory_id


Build = Callable[[Tenants], Awaitable[Request]]


@dataclass(frozen=True)
class Case:
    """A route: the scope it needs, bob's own call, and (for tenant data) bob's call on
    alice's data with the status it must get. `own_key` is who makes the permitted call."""

    scope: str
    own: Build
    cross: Build | None = None
    cross_status: int = 403
    own_key: str = "bob"
    own_ok: Callable[[int], bool] = lambda status: 200 <= status < 300


def fixed(request: Request) -> Build:
    async def build(tenants: Tenants) -> Request:
        return request

    return build


def by_bob_id(method: str, body: dict[str, Any] | None = None) -> Build:
    """A fresh memory of bob's, so a destructive call never takes another case's data."""

    async def build(tenants: Tenants) -> Request:
        return method, f"/v1/memories/{await tenants.bob_memory(f'Bob note {method}')}", body

    return build


def by_alice_id(method: str, body: dict[str, Any] | None = None) -> Build:
    async def build(tenants: Tenants) -> Request:
        return method, f"/v1/memories/{tenants.alice_memory}", body

    return build


def new_key() -> Build:
    async def build(tenants: Tenants) -> Request:
        name = f"made-{uuid.uuid4().hex[:8]}"
        body = {"name": name, "namespaces": ["bob"], "scopes": ["metrics"]}
        return "POST", "/v1/admin/keys", body

    return build


def throwaway_key() -> Build:
    async def build(tenants: Tenants) -> Request:
        info, _ = await tenants.resources.auth.keys.create(
            name=f"gone-{uuid.uuid4().hex[:8]}", namespaces=["bob"], scopes=["read"]
        )
        return "DELETE", f"/v1/admin/keys/{info.id}", None

    return build


def job_of(owner: str) -> Build:
    async def build(tenants: Tenants) -> Request:
        job = tenants.bob_job if owner == "bob" else tenants.alice_job
        return "GET", f"/v1/ingest/jobs/{job}", None

    return build


def chat(namespace: str) -> dict[str, Any]:
    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "What do I like?"}],
        "memory": {"namespace": namespace},
    }


def search(namespace: str) -> dict[str, Any]:
    return {"namespace": namespace, "query": "locker code", "mode": "keyword"}


def recall(namespace: str) -> dict[str, Any]:
    return {"namespace": namespace, "query": "locker code"}


def document(namespace: str) -> dict[str, Any]:
    return {"namespace": namespace, "text": f"A short document for {namespace}."}


def job(namespace: str) -> dict[str, Any]:
    return {"namespace": namespace, "documents": [{"text": f"A job document for {namespace}."}]}


def memory(namespace: str, content: str = "Bob stores this.") -> dict[str, Any]:
    return {"namespace": namespace, "content": content}


FORGET_BOB = {"namespace": "bob", "filters": {"tags_any": ["throwaway"]}}


def passed_auth(status: int) -> bool:
    """Admin calls whose own outcome is not the point (a bad body, an unknown server):
    anything but a refusal shows the key was let in."""
    return status not in (401, 403)


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/v1/memories"): Case(
        "write",
        fixed(("POST", "/v1/memories", memory("bob"))),
        fixed(("POST", "/v1/memories", memory("alice"))),
    ),
    ("POST", "/v1/memories/batch"): Case(
        "write",
        fixed(("POST", "/v1/memories/batch", {"items": [memory("bob", "Bob batch one.")]})),
        # One foreign item refuses the whole batch, bob's own item included.
        fixed(
            (
                "POST",
                "/v1/memories/batch",
                {"items": [memory("bob", "Bob never stored."), memory("alice")]},
            )
        ),
    ),
    ("POST", "/v1/memories/forget"): Case(
        "write",
        fixed(
            ("POST", "/v1/memories/forget", {"namespace": "bob", "filters": {"tags_any": ["x"]}})
        ),
        fixed(("POST", "/v1/memories/forget", {"namespace": "alice"})),
    ),
    ("GET", "/v1/memories"): Case(
        "read",
        fixed(("GET", "/v1/memories?namespace=bob", None)),
        fixed(("GET", "/v1/memories?namespace=alice", None)),
    ),
    ("GET", "/v1/memories/{memory_id}"): Case(
        "read", by_bob_id("GET"), by_alice_id("GET"), cross_status=404
    ),
    ("PATCH", "/v1/memories/{memory_id}"): Case(
        "write",
        by_bob_id("PATCH", {"tags": ["patched"]}),
        by_alice_id("PATCH", {"content": "Bob was here."}),
        cross_status=404,
    ),
    ("DELETE", "/v1/memories/{memory_id}"): Case(
        "write", by_bob_id("DELETE"), by_alice_id("DELETE"), cross_status=404
    ),
    ("POST", "/v1/memories/search"): Case(
        "read",
        fixed(("POST", "/v1/memories/search", recall("bob"))),
        fixed(("POST", "/v1/memories/search", recall("alice"))),
    ),
    ("POST", "/v1/search"): Case(
        "read",
        fixed(("POST", "/v1/search", search("bob"))),
        fixed(("POST", "/v1/search", search("alice"))),
    ),
    ("POST", "/v1/documents"): Case(
        "write",
        fixed(("POST", "/v1/documents", document("bob"))),
        fixed(("POST", "/v1/documents", document("alice"))),
    ),
    ("POST", "/v1/ingest/jobs"): Case(
        "write",
        fixed(("POST", "/v1/ingest/jobs", job("bob"))),
        fixed(("POST", "/v1/ingest/jobs", job("alice"))),
    ),
    ("GET", "/v1/ingest/jobs/{job_id}"): Case(
        "read", job_of("bob"), job_of("alice"), cross_status=404
    ),
    ("GET", "/v1/ingest/jobs"): Case(
        "read",
        fixed(("GET", "/v1/ingest/jobs", None)),
        fixed(("GET", "/v1/ingest/jobs?namespace=alice", None)),
    ),
    ("POST", "/v1/chat/completions"): Case(
        "chat",
        fixed(("POST", "/v1/chat/completions", chat("bob"))),
        fixed(("POST", "/v1/chat/completions", chat("alice"))),
    ),
    ("POST", "/v1/embeddings"): Case(
        "embed",
        fixed(("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "tea"})),
    ),
    ("GET", "/v1/models"): Case("any", fixed(("GET", "/v1/models", None))),
    ("GET", "/v1/auth/me"): Case("any", fixed(("GET", "/v1/auth/me", None))),
    ("GET", "/v1/spaces"): Case("metrics", fixed(("GET", "/v1/spaces", None)), own_key="ops"),
    ("GET", "/v1/providers"): Case("metrics", fixed(("GET", "/v1/providers", None)), own_key="ops"),
    ("GET", "/metrics"): Case("metrics", fixed(("GET", "/metrics", None)), own_key="ops"),
    ("GET", "/v1/admin/vllm"): Case("admin", fixed(("GET", "/v1/admin/vllm", None)), own_key="ops"),
    ("POST", "/v1/admin/vllm"): Case(
        "admin", fixed(("POST", "/v1/admin/vllm", {})), own_key="ops", own_ok=passed_auth
    ),
    ("POST", "/v1/admin/keys"): Case("admin", new_key(), own_key="ops"),
    ("GET", "/v1/admin/keys"): Case("admin", fixed(("GET", "/v1/admin/keys", None)), own_key="ops"),
    ("DELETE", "/v1/admin/keys/{id_or_name}"): Case("admin", throwaway_key(), own_key="ops"),
    ("DELETE", "/v1/admin/vllm/{name}"): Case(
        "admin",
        fixed(("DELETE", "/v1/admin/vllm/no-such-server", None)),
        own_key="ops",
        own_ok=passed_auth,
    ),
}
SCOPES_OF = {
    "alice": ["read", "write", "chat", "embed"],
    "bob": ["read", "write", "chat", "embed"],
    "bob-read": ["read"],
    "bob-write": ["write"],
    "ops": ["metrics", "admin"],
}


def providers_file(path: Path, chat_server: ChatServer) -> Path:
    path.write_text(
        f"""
spaces:
  default: {{model: all-MiniLM-L6-v2, dimension: 384, normalized: true}}
providers:
  - {{name: local, kind: local, space: default}}
chat:
  - {{name: vllm-chat, kind: vllm, base_url: "{chat_server.base_url}", model: {CHAT_MODEL},
      context_window: 2048, connect_timeout: 0.5, read_timeout: 10}}
"""
    )
    return path


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    with ChatServer("vllm", CHAT_MODEL, context_window=2048) as server:
        yield server


@pytest.fixture
def required(settings: Settings, tmp_path: Path, chat_server: ChatServer) -> Settings:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "notes.txt").write_text("Bob's notes, on the server.")
    return settings.model_copy(
        update={
            "auth": "required",
            "providers_file": providers_file(tmp_path / "providers.yaml", chat_server),
            "probe_interval_seconds": 3600,
            "ingest_allowed_paths": [allowed],
        }
    )


@pytest.fixture
async def tenants(required: Settings, local_provider: LocalProvider) -> AsyncIterator[Tenants]:
    async with (
        open_resources(required, local=local_provider) as resources,
        http_app(required, resources) as client,
    ):
        service = resources.auth.keys
        made: dict[str, str] = {}
        for name, scopes in SCOPES_OF.items():
            namespaces = ["*"] if name == "ops" else [name.split("-")[0]]
            _, made[name] = await service.create(name=name, namespaces=namespaces, scopes=scopes)
        _, made["expired"] = await service.create(
            name="expired",
            namespaces=["bob"],
            scopes=["read", "write"],
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        async with resources.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE api_key SET expires_at = now() - interval '1 second' "
                    "WHERE name = 'expired'"
                )
            )
        _, made["revoked"] = await service.create(
            name="revoked", namespaces=["bob"], scopes=["read", "write"]
        )
        await service.revoke("revoked")
        alice = {"Authorization": f"Bearer {made['alice']}"}
        bob = {"Authorization": f"Bearer {made['bob']}"}
        stored = await client.post(
            "/v1/memories", json=memory("alice", ALICE_SECRET), headers=alice
        )
        assert stored.status_code == 201, stored.text
        alice_job = await client.post("/v1/ingest/jobs", json=job("alice"), headers=alice)
        bob_job = await client.post("/v1/ingest/jobs", json=job("bob"), headers=bob)
        assert alice_job.status_code == bob_job.status_code == 202, alice_job.text
        yield Tenants(
            client,
            resources,
            made,
            stored.json()["id"],
            alice_job.json()["id"],
            bob_job.json()["id"],
        )


def api_routes(settings: Settings, resources: Resources) -> set[tuple[str, str]]:
    paths = create_app(settings, resources).openapi()["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item}


class TestEveryRoute:
    async def test_every_route_has_a_case(self, required: Settings, tenants: Tenants) -> None:
        assert api_routes(required, tenants.resources) == set(CASES) | OPEN_ROUTES

    @pytest.mark.parametrize("who", [None, "malformed", "expired", "revoked"])
    async def test_without_a_valid_key_every_route_is_refused(
        self, tenants: Tenants, who: str | None
    ) -> None:
        key = {"malformed": "msk_aaaaaaaaaaaa_not-a-real-secret"}.get(who or "")
        if who in ("expired", "revoked"):
            key = tenants.keys[who]
        for route, case in CASES.items():
            response = await tenants.call(key, await case.own(tenants))
            assert response.status_code == 401, (route, response.text)
            assert_error(response.json(), "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        for method, path in OPEN_ROUTES:
            assert (await tenants.call(key, (method, path, None))).status_code == 200

    async def test_no_cross_tenant_call_succeeds(
        self, tenants: Tenants, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        refused = 0
        for route, case in CASES.items():
            if case.cross is None:
                continue
            response = await tenants.call(tenants.keys["bob"], await case.cross(tenants))
            assert response.status_code == case.cross_status, (route, response.text)
            assert_error(response.json(), "forbidden" if case.cross_status == 403 else "not_found")
            refused += 1
        assert refused == sum(case.cross is not None for case in CASES.values()) == 14
        leaked = [body for body in tenants.bodies if ALICE_SECRET in body or "4417" in body]
        assert leaked == []
        await self.alice_is_untouched(tenants)
        for key in tenants.keys.values():
            assert key not in caplog.text and all(key not in body for body in tenants.bodies)

    async def test_every_permitted_call_still_works(self, tenants: Tenants) -> None:
        for route, case in CASES.items():
            response = await tenants.call(tenants.keys[case.own_key], await case.own(tenants))
            assert case.own_ok(response.status_code), (route, response.text)
        jobs = await tenants.call(tenants.keys["bob"], ("GET", "/v1/ingest/jobs", None))
        assert {item["namespace"] for item in jobs.json()["items"]} == {"bob"}, "list filtered"
        listed = await tenants.call(
            tenants.keys["bob"], ("GET", "/v1/memories?namespace=bob", None)
        )
        assert "Bob never stored." not in listed.text, "the refused batch stored nothing"

    @pytest.mark.parametrize("who", ["bob-read", "bob-write"])
    async def test_a_key_without_the_scope_is_refused_and_with_it_works(
        self, tenants: Tenants, who: str
    ) -> None:
        for route, case in CASES.items():
            if case.own_key != "bob":
                continue
            response = await tenants.call(tenants.keys[who], await case.own(tenants))
            if case.scope in SCOPES_OF[who] or case.scope == "any":
                assert case.own_ok(response.status_code), (who, route, response.text)
            else:
                assert response.status_code == 403, (who, route, response.text)
                details = assert_error(response.json(), "forbidden")["details"]
                assert details == {"scope": case.scope}, (who, route)

    async def test_chat_with_memory_needs_read_on_the_namespace(self, tenants: Tenants) -> None:
        """A chat-only key may chat, but not with memories: those need `read` too."""
        service = tenants.resources.auth.keys
        _, chat_only = await service.create(name="chatter", namespaces=["bob"], scopes=["chat"])
        plain = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert (await tenants.call(chat_only, ("POST", "/v1/chat/completions", plain))).is_success
        with_memory = await tenants.call(chat_only, ("POST", "/v1/chat/completions", chat("bob")))
        assert with_memory.status_code == 403
        assert assert_error(with_memory.json(), "forbidden")["details"] == {"scope": "read"}

    async def test_server_paths_are_for_admin_keys_only(
        self, tenants: Tenants, tmp_path: Path
    ) -> None:
        """The allowed folders are the operator's, shared by every tenant: only an admin key
        may queue a job from them, and only admin keys see a job's path and worker."""
        (allowed,) = tenants.resources.ingest_jobs.allowed_paths
        _, admin = await tenants.resources.auth.keys.create(
            name="bob-admin", namespaces=["bob"], scopes=["read", "write", "admin"]
        )
        path_job = {"namespace": "bob", "path": str(allowed / "notes.txt")}
        refused = await tenants.call(tenants.keys["bob"], ("POST", "/v1/ingest/jobs", path_job))
        assert refused.status_code == 403
        assert assert_error(refused.json(), "forbidden")["details"] == {"scope": "admin"}
        assert str(allowed) not in refused.text
        submitted = await tenants.call(admin, ("POST", "/v1/ingest/jobs", path_job))
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["path"] == str(allowed / "notes.txt")
        url = f"/v1/ingest/jobs/{submitted.json()['id']}"
        seen = await tenants.call(tenants.keys["bob"], ("GET", url, None))
        assert seen.json()["source"] == "path"
        assert (seen.json()["path"], seen.json()["claimed_by"]) == (None, None)
        listed = await tenants.call(tenants.keys["bob"], ("GET", "/v1/ingest/jobs", None))
        assert all(item["path"] is None for item in listed.json()["items"])
        outside = {"namespace": "bob", "path": str(tmp_path)}
        as_admin = await tenants.call(admin, ("POST", "/v1/ingest/jobs", outside))
        assert assert_error(as_admin.json(), "forbidden")["details"]["allowed"] == [str(allowed)]

    async def test_every_memory_and_document_records_its_keys(
        self, tenants: Tenants, required: Settings
    ) -> None:
        bob, writer = tenants.keys["bob"], tenants.keys["bob-write"]
        ids = {info.name: str(info.id) for info in await tenants.resources.auth.keys.list()}

        def ref(name: str) -> dict[str, str]:
            return {"id": ids[name], "name": name}

        audited = memory("bob", "Audited.")
        stored = (await tenants.call(bob, ("POST", "/v1/memories", audited))).json()
        assert stored["created_by"] == stored["updated_by"] == ref("bob")
        url = f"/v1/memories/{stored['id']}"
        patched = await tenants.call(writer, ("PATCH", url, {"tags": ["seen"]}))
        assert patched.json()["created_by"] == ref("bob")
        assert patched.json()["updated_by"] == ref("bob-write")
        again = await tenants.call(writer, ("POST", "/v1/memories", audited))
        assert again.status_code == 200 and again.json()["created_by"] == ref("bob")
        read = (await tenants.call(bob, ("GET", url, None))).json()
        assert (read["created_by"], read["updated_by"]) == (ref("bob"), ref("bob-write"))

        first = {"namespace": "bob", "source_uri": "notes://audit", "text": "First version."}
        made = await tenants.call(bob, ("POST", "/v1/documents", first))
        assert made.json()["created_by"] == made.json()["updated_by"] == ref("bob")
        second = {**first, "text": "Second version, by the writer."}
        changed = await tenants.call(writer, ("POST", "/v1/documents", second))
        assert (changed.json()["created_by"], changed.json()["updated_by"]) == (
            ref("bob"),
            ref("bob-write"),
        )

        by_job = {"namespace": "bob", "documents": [{"text": "Ingested by a worker."}]}
        queued = await tenants.call(writer, ("POST", "/v1/ingest/jobs", by_job))
        assert queued.status_code == 202, queued.text
        assert tenants.resources.documents is not None
        worker = job_worker(required, tenants.resources.engine, tenants.resources.documents)
        while await worker.run_once() is not None:
            pass
        async with tenants.resources.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT created_by_key_name, updated_by_key_name FROM document "
                        "WHERE namespace = 'bob' AND source_uri NOT LIKE 'notes://%'"
                    )
                )
            ).all()
        # Two jobs ran: bob's, queued when the tenants were set up, and the writer's.
        assert sorted(tuple(row) for row in rows) == [("bob", "bob"), ("bob-write", "bob-write")]

    async def test_a_key_never_grants_more_than_it_holds(self, tenants: Tenants) -> None:
        service = tenants.resources.auth.keys
        _, team_admin = await service.create(
            name="team-admin", namespaces=["team-a:*"], scopes=["read", "admin"]
        )
        url = "/v1/admin/keys"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"namespaces": ["team-b:x"], "scopes": ["read"]}, "namespaces"),
            ({"namespaces": ["team-*"], "scopes": ["read"]}, "namespaces"),
            ({"namespaces": ["*"], "scopes": ["read"]}, "namespaces"),
            ({"namespaces": ["team-a:x"], "scopes": ["write"]}, "scopes"),
            ({"namespaces": ["team-a:x"], "scopes": ["read"], "allow_cloud": True}, "allow_cloud"),
        ]
        for fields, refused in cases:
            response = await tenants.call(team_admin, ("POST", url, {"name": "x", **fields}))
            assert response.status_code == 403, (fields, response.text)
            assert refused in assert_error(response.json(), "forbidden")["details"]
        body = {"name": "team-a-reader", "namespaces": ["team-a:docs*"], "scopes": ["read"]}
        made = await tenants.call(team_admin, ("POST", url, body))
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        listed = await tenants.call(team_admin, ("GET", url, None))
        assert "team-a-reader" in listed.text and key not in listed.text
        assert (
            await tenants.call(key, ("GET", "/v1/memories?namespace=team-a:docs1", None))
        ).is_success
        revoked = await tenants.call(team_admin, ("DELETE", f"{url}/team-a-reader", None))
        assert revoked.json()["revoked_at"] is not None
        assert (await tenants.call(key, ("GET", "/v1/models", None))).status_code == 401
        # Another tenant's keys are not this admin's to see or revoke: 404, as unknown ones.
        assert "alice" not in listed.text and "ops" not in listed.text
        for other in ("alice", "ops", str(tenants.alice_memory)):
            gone = await tenants.call(team_admin, ("DELETE", f"{url}/{other}", None))
            assert gone.status_code == 404, gone.text
        alice_still = await tenants.call(tenants.keys["alice"], ("GET", "/v1/models", None))
        assert alice_still.status_code == 200
        # Starting processes on the host needs an admin key on every namespace.
        vllm = await tenants.call(team_admin, ("GET", "/v1/admin/vllm", None))
        assert vllm.status_code == 403
        assert assert_error(vllm.json(), "forbidden")["details"] == {"namespaces": "*"}

    @staticmethod
    async def alice_is_untouched(tenants: Tenants) -> None:
        alice = tenants.keys["alice"]
        mine = await tenants.call(alice, ("GET", f"/v1/memories/{tenants.alice_memory}", None))
        assert mine.status_code == 200 and mine.json()["content"] == ALICE_SECRET
        listed = await tenants.call(alice, ("GET", "/v1/memories?namespace=alice", None))
        assert [item["content"] for item in listed.json()["items"]] == [ALICE_SECRET]
        jobs = await tenants.call(alice, ("GET", "/v1/ingest/jobs?namespace=alice", None))
        assert [item["id"] for item in jobs.json()["items"]] == [tenants.alice_job]
