"""The MCP server, through the SDK's own client, against real processes.

- Every tool (listed, called, remember then recall by meaning, tool errors for bad input)
  over streamable HTTP at `/mcp` of a running `memory-service serve`, over stdio with
  `memory-service mcp --url` against it, and over stdio with `memory-service mcp` opening
  the embedded default itself.
- With authentication required: no key is refused, and a key limited to one namespace
  cannot recall another's memories; a call without a namespace uses the key's default.
"""

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from memory_service.app import create_app
from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from tests.fakes import FlakyProvider
from tests.test_cli import COMMAND, clean_env, run, serving

pytestmark = pytest.mark.slow

TOOLS = {
    "remember",
    "recall",
    "get_memory",
    "list_memories",
    "update_memory",
    "forget",
    "search_documents",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A `serve` on the embedded default, its data folder its own; (URL, environment)."""
    data = tmp_path_factory.mktemp("mcp-data")
    env = clean_env(
        MEMORY_DATA_DIR=str(data), MEMORY_AUTH="off", MEMORY_MCP_DEFAULT_NAMESPACE="agent"
    )
    with serving(env, data / "serve.log") as url:
        yield url, env


@asynccontextmanager
async def http_session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def answer(result: CallToolResult) -> dict[str, Any]:
    assert not result.isError, result.content
    content: dict[str, Any] | None = result.structuredContent
    assert content is not None
    return content


def refusal(result: CallToolResult) -> dict[str, Any]:
    """A tool error: the REST API's error body, as text and as structured content."""
    assert result.isError
    (text,) = result.content
    body: dict[str, Any] = json.loads(getattr(text, "text", ""))
    assert body == result.structuredContent
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message", "details"}
    return error


async def exercise_every_tool(session: ClientSession, namespace: str) -> None:
    """Every tool, on a session whose calls default to `namespace` (empty at the start)."""
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    assert tools["remember"].inputSchema["required"] == ["content"]  # namespace: the default
    assert tools["recall"].annotations is not None and tools["recall"].annotations.readOnlyHint

    stored = []
    for content in (
        "The user's daughter is allergic to peanuts.",
        "The quarterly report is due on the first Monday of April.",
        "Our office cat is called Biscuit.",
    ):
        stored.append(answer(await session.call_tool("remember", {"content": content})))
    assert {s["status"] for s in stored} == {"embedded"} and all(s["created"] for s in stored)
    again = answer(
        await session.call_tool("remember", {"content": "Our office cat is called Biscuit."})
    )
    assert again == {**stored[2], "created": False}

    found = answer(
        await session.call_tool("recall", {"query": "what food must the child avoid?", "k": 2})
    )
    assert found["memories"][0]["id"] == stored[0]["id"]
    assert found["memories"][0]["score"] > found["memories"][1]["score"]

    one = answer(await session.call_tool("get_memory", {"id": stored[1]["id"]}))
    assert one["namespace"] == namespace
    page = answer(await session.call_tool("list_memories", {"limit": 2}))
    assert len(page["items"]) == 2 and page["next_cursor"] is not None
    rest = answer(
        await session.call_tool("list_memories", {"limit": 2, "cursor": page["next_cursor"]})
    )
    listed = {m["id"] for m in page["items"] + rest["items"]}
    assert listed == {s["id"] for s in stored}

    updated = answer(
        await session.call_tool("update_memory", {"id": stored[2]["id"], "tags": ["pets"]})
    )
    assert updated["tags"] == ["pets"]
    by_filter = answer(
        await session.call_tool(
            "forget", {"namespace": namespace, "filters": {"tags_any": ["pets"]}}
        )
    )
    assert by_filter == {"deleted": 1}
    by_id = answer(await session.call_tool("forget", {"id": stored[1]["id"]}))
    assert by_id == {"deleted": 1}

    documents = answer(await session.call_tool("search_documents", {"query": "anything", "k": 3}))
    assert documents == {"chunks": []}

    # Bad input: the API's own 422, and nothing stored.
    assert refusal(await session.call_tool("remember", {"content": ""}))["type"] == (
        "validation_error"
    )
    assert refusal(await session.call_tool("recall", {"query": "x", "k": 1000}))["type"] == (
        "validation_error"
    )
    unknown = "00000000-0000-0000-0000-000000000000"
    assert refusal(await session.call_tool("get_memory", {"id": unknown}))["type"] == ("not_found")
    # Forgetting a whole namespace needs it named, however its filters say "everything".
    everything: dict[str, Any]
    for everything in ({}, {"tags_any": []}, {"agent_id": None, "metadata": {}}):
        forget_all = await session.call_tool("forget", {"filters": everything})
        assert refusal(forget_all)["type"] == "invalid_request"
    # An id is a memory's id: never a path to another route.
    for tool in ("get_memory", "update_memory", "forget"):
        escaped = await session.call_tool(tool, {"id": "../admin/keys"})
        assert refusal(escaped)["type"] == "validation_error"
    left = answer(await session.call_tool("list_memories", {}))
    assert [m["id"] for m in left["items"]] == [stored[0]["id"]]


async def test_every_tool_over_streamable_http(served: tuple[str, dict[str, str]]) -> None:
    url, _ = served
    async with http_session(url) as session:
        await exercise_every_tool(session, "agent")


@asynccontextmanager
async def stdio_session(
    args: list[str], env: dict[str, str], errors: Path
) -> AsyncIterator[ClientSession]:
    """`memory-service mcp ...` launched as a host launches it; its stderr in `errors`."""
    with errors.open("w") as errlog:
        parameters = StdioServerParameters(command=COMMAND, args=["mcp", *args], env=env)
        async with (
            stdio_client(parameters, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def test_every_tool_over_stdio_against_a_running_service(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    env = {**env, "MEMORY_MCP_DEFAULT_NAMESPACE": "agent-stdio"}
    async with stdio_session(["--url", url], env, tmp_path / "mcp.stderr") as session:
        await exercise_every_tool(session, "agent-stdio")


async def test_every_tool_over_stdio_on_the_embedded_default(tmp_path: Path) -> None:
    """No `--url`: the command opens the service itself (embedded database, bundled model)."""
    env = clean_env(
        MEMORY_DATA_DIR=str(tmp_path / "data"),
        MEMORY_AUTH="off",
        MEMORY_MCP_DEFAULT_NAMESPACE="desk",
    )
    async with stdio_session([], env, tmp_path / "mcp.stderr") as session:
        await exercise_every_tool(session, "desk")


@pytest.fixture(scope="module")
def keyed(
    served: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A second `serve` on the same data, with keys required; (URL, key by tenant)."""
    _, env = served
    keys = {}
    for tenant in ("alice", "bob"):
        made = run(
            [
                "keys",
                "create",
                "--name",
                tenant,
                "--namespace",
                tenant,
                "--default-namespace",
                tenant,
                "--scope",
                "read",
                "--scope",
                "write",
                "--json",
            ],
            env,
        )
        assert made.returncode == 0, made.stderr
        keys[tenant] = json.loads(made.stdout)["key"]
    log = tmp_path_factory.mktemp("mcp-keyed") / "serve.log"
    with serving({**env, "MEMORY_AUTH": "required"}, log) as url:
        yield url, keys


async def test_keys_bound_what_mcp_calls_may_touch(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    async with httpx.AsyncClient() as http:
        for authorization in (None, "Bearer msk_not_a_key", f"Basic {keys['alice']}"):
            headers = {"Accept": "application/json, text/event-stream"}
            if authorization is not None:
                headers["Authorization"] = authorization
            refused = await http.post(
                f"{url}/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers=headers,
            )
            assert refused.status_code == 401, authorization
            assert refused.json()["error"]["type"] == "unauthorized"
        me = await http.get(
            f"{url}/v1/auth/me", headers={"Authorization": f"Bearer {keys['alice']}"}
        )
        assert me.json() | {"key": None} == {
            "auth": "required",
            "key": None,
            "scopes": ["read", "write"],
            "namespaces": ["alice"],
            "default_namespace": "alice",
            "allow_cloud": False,
        }
        assert me.json()["key"]["name"] == "alice"

    async with http_session(url, keys["alice"]) as alice:
        secret = "Alice keeps the spare key under the blue flowerpot."
        stored = answer(await alice.call_tool("remember", {"content": secret}))
        mine = answer(await alice.call_tool("get_memory", {"id": stored["id"]}))
        assert mine["namespace"] == "alice"  # her key's default namespace

    async with http_session(url, keys["bob"]) as bob:
        crossed = refusal(
            await bob.call_tool("recall", {"namespace": "alice", "query": "where is the key?"})
        )
        assert crossed["type"] == "forbidden"
        own = answer(await bob.call_tool("recall", {"query": "where is the spare key?"}))
        assert own == {"memories": []}  # his default namespace, bob, holds nothing of hers
        hidden = refusal(await bob.call_tool("get_memory", {"id": stored["id"]}))
        assert hidden["type"] == "not_found"
        assert secret not in json.dumps([crossed, own, hidden])


async def test_tools_work_where_localhost_is_not_an_allowed_host(
    settings: Settings, embedder: FlakyProvider
) -> None:
    """With authentication off, the app refuses Hosts it does not allow; the requests its
    MCP tools send to itself use one it does."""
    configured = settings.model_copy(update={"allowed_hosts": ["memory.internal"]})
    async with open_resources(configured, embedder=embedder) as resources:
        app = create_app(configured, resources)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://memory.internal") as http,
            streamable_http_client("http://memory.internal/mcp", http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            remember = {"namespace": "ops", "content": "Rotate the keys quarterly."}
            assert answer(await session.call_tool("remember", remember))["created"]
            local = await http.get("http://localhost/v1/memories", params={"namespace": "ops"})
            assert local.json()["error"]["type"] == "invalid_host"
