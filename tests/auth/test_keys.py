"""API keys on a real database: made once, stored hashed, refused at once when revoked or
expired, by every process sharing the database."""

import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Text, column, select, text, values
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.auth import keys
from memory_service.auth.service import KeyService
from memory_service.bootstrap import Resources
from memory_service.core.access import EVERY_NAMESPACE, Namespaces
from memory_service.core.db import create_engine
from memory_service.core.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from memory_service.core.settings import Settings
from tests.test_cli import clean_env, run


async def make(
    service: KeyService,
    name: str = "agent",
    namespaces: tuple[str, ...] = ("alice",),
    **fields: object,
) -> str:
    _, key = await service.create(
        name=name,
        namespaces=list(namespaces),
        scopes=["read", "write"],
        **fields,  # type: ignore[arg-type]
    )
    return key


class TestKeyService:
    async def test_a_key_stands_for_its_namespaces_and_scopes(self, resources: Resources) -> None:
        service = resources.auth.keys
        info, key = await service.create(
            name="agent", namespaces=["alice", "team-a:*"], scopes=["write", "read"]
        )
        assert key.startswith("msk_") and keys.prefix_of(key) is not None
        assert info.scopes == ["read", "write"] and info.namespaces == ["alice", "team-a:*"]
        principal = await service.authenticate(key)
        assert (principal.key_id, principal.key_name) == (info.id, "agent")
        assert principal.namespaces.allows("alice") and principal.namespaces.allows("team-a:x")
        assert not principal.namespaces.allows("alice2") and not principal.namespaces.allows("bob")
        assert not principal.allow_cloud

    async def test_only_the_hash_is_stored_and_listing_never_shows_the_key(
        self, resources: Resources
    ) -> None:
        key = await make(resources.auth.keys)
        async with resources.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT * FROM api_key"))).one()
        assert bytes(stored.secret_sha256) == hashlib.sha256(key.encode()).digest()
        assert key not in json.dumps([str(value) for value in stored])
        listed = await resources.auth.keys.list()
        assert key not in repr(listed) and [info.name for info in listed] == ["agent"]

    @pytest.mark.parametrize(
        "presented",
        [
            "",
            "Bearer",
            "msk_nope",
            "msk_abcdefghijkl_wrong",
            "sk-openai-looking-key",
        ],
    )
    async def test_anything_but_a_valid_key_is_refused(
        self, resources: Resources, presented: str
    ) -> None:
        await make(resources.auth.keys)
        with pytest.raises(Unauthorized):
            await resources.auth.keys.authenticate(presented)

    async def test_a_right_prefix_with_a_wrong_secret_is_refused(
        self, resources: Resources
    ) -> None:
        key = await make(resources.auth.keys)
        with pytest.raises(Unauthorized):
            await resources.auth.keys.authenticate(key[:-4] + "AAAA")

    async def test_revoked_in_one_process_refused_by_another_at_once(
        self, resources: Resources, settings: Settings
    ) -> None:
        """Two services on one database stand for two processes: no cache to wait out."""
        key = await make(resources.auth.keys)
        assert settings.database_url is not None
        other: AsyncEngine = create_engine(settings.database_url, pool_size=1)
        try:
            elsewhere = KeyService(engine=other)
            await elsewhere.authenticate(key)
            revoked = await resources.auth.keys.revoke("agent")
            assert revoked.revoked_at is not None
            with pytest.raises(Unauthorized):
                await elsewhere.authenticate(key)
            again = await resources.auth.keys.revoke(str(revoked.id))
            assert again.revoked_at == revoked.revoked_at, "revoked once, at its first time"
        finally:
            await other.dispose()

    async def test_an_expired_key_is_refused(self, resources: Resources) -> None:
        soon = datetime.now(UTC) + timedelta(hours=1)
        key = await make(resources.auth.keys, expires_at=soon)
        await resources.auth.keys.authenticate(key)
        async with resources.engine.begin() as conn:  # the hour passes
            await conn.execute(text("UPDATE api_key SET expires_at = now() - interval '1 second'"))
        with pytest.raises(Unauthorized):
            await resources.auth.keys.authenticate(key)

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"name": "has space"}, "key name"),
            ({"name": "0b7c7f7e-55b0-4e4b-9a40-3f3c3f6a1d2e"}, "not an id"),
            ({"namespaces": []}, "at least one namespace"),
            ({"namespaces": ["a*b"]}, "namespace pattern"),
            ({"namespaces": ["bad namespace"]}, "namespace pattern"),
            ({"scopes": ["read", "root"]}, "scopes must be some of"),
            ({"scopes": []}, "scopes must be some of"),
            ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "in the past"),
            ({"expires_at": datetime(2030, 1, 1)}, "time zone"),
            ({"default_namespace": "bob"}, "outside the key's namespaces"),
            ({"default_namespace": "alice*"}, "not a pattern"),
        ],
    )
    async def test_bad_input_is_refused_and_nothing_is_made(
        self, resources: Resources, fields: dict[str, object], message: str
    ) -> None:
        request: dict[str, object] = {"name": "agent", "namespaces": ["alice"], "scopes": ["read"]}
        with pytest.raises(InvalidRequest, match=message):
            await resources.auth.keys.create(**(request | fields))  # type: ignore[arg-type]
        assert await resources.auth.keys.list() == []

    async def test_a_default_namespace_is_kept_and_answered_to_its_key(
        self, resources: Resources, client: httpx.AsyncClient
    ) -> None:
        info, key = await resources.auth.keys.create(
            name="agent",
            namespaces=["team-a:*"],
            scopes=["read"],
            default_namespace="team-a:notes",
        )
        assert info.default_namespace == "team-a:notes"
        principal = await resources.auth.keys.authenticate(key)
        assert principal.default_namespace == "team-a:notes"
        # With authentication off (this app), the caller is anonymous: no key, no default.
        me = (await client.get("/v1/auth/me")).json()
        assert me == {
            "auth": "off",
            "key": None,
            "scopes": sorted(["read", "write", "chat", "embed", "admin", "metrics"]),
            "namespaces": ["*"],
            "default_namespace": None,
            "allow_cloud": True,
        }

    async def test_names_are_unique_and_revoking_nothing_says_so(
        self, resources: Resources
    ) -> None:
        await make(resources.auth.keys)
        with pytest.raises(Conflict):
            await make(resources.auth.keys)
        with pytest.raises(NotFound):
            await resources.auth.keys.revoke("nobody")


class TestNamespaces:
    async def test_the_sql_clause_selects_what_allows_allows(self, resources: Resources) -> None:
        names = ["alice", "alice2", "team-a:", "team-a:x", "team-b:x", "bob"]
        rows = values(column("name", Text), name="n").data([(name,) for name in names])
        for patterns in (["alice"], ["team-a:*"], ["alice", "team-a:*"], ["*"], ["bo*", "x"]):
            access = Namespaces.of(patterns)
            async with resources.engine.connect() as conn:
                result = await conn.execute(select(rows.c.name).where(access.clause(rows.c.name)))
                selected = sorted(result.scalars())
            assert selected == sorted(n for n in names if access.allows(n)), patterns
        assert EVERY_NAMESPACE.everything and Namespaces.of(["*"]).everything
        assert not Namespaces.of(["alice"]).allows("bob")


class TestCommand:
    def test_create_prints_the_key_last_and_list_never_does(self, settings: Settings) -> None:
        """The real command, on the test's database, as an operator runs it."""
        assert settings.database_url is not None
        env = clean_env(MEMORY_DATABASE_URL=settings.database_url)
        made = run(
            ["keys", "create", "--name", "ci", "--namespace", "team-a:*", "--scope", "read"], env
        )
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        assert keys.prefix_of(key) is not None
        as_json = run(
            [
                "keys",
                "create",
                "--name",
                "ci2",
                "--namespace",
                "x",
                "--scope",
                "embed",
                "--allow-cloud",
                "--json",
            ],
            env,
        )
        body = json.loads(as_json.stdout)
        assert body["name"] == "ci2" and body["allow_cloud"] and keys.prefix_of(body["key"])
        listed = run(["keys", "list"], env)
        assert "ci2" in listed.stdout and key not in listed.stdout
        assert body["key"] not in listed.stdout
        revoked = run(["keys", "revoke", "ci"], env)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        bad = run(["keys", "create", "--name", "bad", "--namespace", "a b", "--scope", "read"], env)
        assert bad.returncode == 1 and "namespace pattern" in bad.stderr
        for output in (made.stderr, as_json.stderr, listed.stderr, revoked.stderr):
            assert key not in output and body["key"] not in output

    def test_a_setup_step_makes_the_key_once_into_a_private_file(
        self, settings: Settings, tmp_path: Path
    ) -> None:
        """What docker-compose.yml's one-shot `api-key` job runs, at every `up`."""
        assert settings.database_url is not None
        env = clean_env(MEMORY_DATABASE_URL=settings.database_url)
        target = tmp_path / "compose.key"
        argv = ["keys", "create", "--name", "compose", "--namespace", "*", "--scope", "read",
                "--if-missing", "--output", str(target)]  # fmt: skip
        first = run(argv, env)
        assert first.returncode == 0, first.stderr
        key = target.read_text().strip()
        assert keys.prefix_of(key) is not None and key not in first.stdout + first.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        again = run(argv, env)
        assert again.returncode == 0 and "nothing made" in again.stdout
        assert target.read_text().strip() == key, "the key made first stays"
