"""The `memory-service` command: serve, db, ingest, worker, index, providers, models, vllm."""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
import uvicorn.config

from memory_service.auth.service import SCOPES
from memory_service.cli import models as model_commands
from memory_service.cli.output import REBUILD_OUTCOMES, format_index, format_providers
from memory_service.core import migrations
from memory_service.core.embedded import embedded_postgres
from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.core.telemetry import configure_logging

if TYPE_CHECKING:
    from memory_service.bootstrap import Resources

log = logging.getLogger("memory_service")


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured URL, or the embedded server's (started here, stopped on exit)."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    with embedded_postgres(settings.data_dir, settings.embedded_database_name) as url:
        yield url


def serve(settings: Settings) -> int:
    with database_url(settings) as url:
        if settings.embedded:
            migrations.upgrade(url)
        return asyncio.run(_serve(settings.model_copy(update={"database_url": url})))


def mcp(settings: Settings, url: str | None, api_key: str | None) -> int:
    from memory_service.cli.mcp import serve_stdio

    if url is not None:
        return asyncio.run(serve_stdio(settings, url, api_key))
    with database_url(settings) as db_url:
        if settings.embedded:
            migrations.upgrade(db_url)
        return asyncio.run(
            serve_stdio(settings.model_copy(update={"database_url": db_url}), None, api_key)
        )


class _Server(uvicorn.Server):
    """uvicorn's server, telling the service when it begins to stop: chat streams in
    progress end at once with an error event rather than hold the shutdown up."""

    def __init__(self, config: uvicorn.Config, resources: "Resources") -> None:
        super().__init__(config)
        self.resources = resources
        self.loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it may run between any two steps of the loop, so the event is
        # set by the loop itself.
        if self.resources.chat is not None:
            self.loop.call_soon_threadsafe(self.resources.chat.stopping.set)
        super().handle_exit(sig, frame)


async def _serve(settings: Settings) -> int:
    from memory_service.app import create_app
    from memory_service.bootstrap import open_resources

    try:
        async with open_resources(settings, environ=os.environ) as resources:
            app = create_app(settings, resources)
            config = uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                # JSON logs: uvicorn's loggers go through the root's JSON handler too.
                log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
                # Past this, requests still running are cancelled and the process exits.
                timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            )
            server = _Server(config, resources)
            await server.serve()
            return 0 if server.started else 1
    except StartupError as exc:
        log.error("%s", exc)
        return 2


def ingest(settings: Settings, paths: list[str], namespace: str, prune: bool, fmt: str) -> int:
    from memory_service.cli.ingest import ingest as run_ingest

    with database_url(settings) as url:
        if settings.embedded:
            migrations.upgrade(url)
        resolved = settings.model_copy(update={"database_url": url})
        try:
            return asyncio.run(
                run_ingest(resolved, os.environ, paths, namespace, prune=prune, stdin_format=fmt)
            )
        except StartupError as exc:
            log.error("%s", exc)
            return 2


def worker(settings: Settings, until_idle: bool) -> int:
    from memory_service.cli.jobs import work

    with database_url(settings) as url:
        if settings.embedded:
            migrations.upgrade(url)
        resolved = settings.model_copy(update={"database_url": url})
        try:
            return asyncio.run(work(resolved, os.environ, until_idle=until_idle))
        except StartupError as exc:
            log.error("%s", exc)
            return 2


def db_upgrade(settings: Settings, revision: str) -> int:
    with database_url(settings) as url:
        migrations.upgrade(url, revision)
    return 0


def db_current(settings: Settings) -> int:
    from memory_service.core.db import create_engine, current_revision

    async def _current(url: str) -> str | None:
        engine = create_engine(url, pool_size=1)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    with database_url(settings) as url:
        current = asyncio.run(_current(url))
    head = migrations.head_revision()
    print(
        f"current: {current or '<empty>'}  head: {head}  {'(at head)' if current == head else ''}"
    )
    return 0 if current == head else 1


def index(settings: Settings, action: str, table: str | None, as_json: bool) -> int:
    """`index status` / `index rebuild`, straight on the database (no running service needed)."""
    from memory_service.cli.index import index_rebuild, index_status

    with database_url(settings) as url:
        resolved = settings.model_copy(update={"database_url": url})
        if action == "status":
            statuses = asyncio.run(index_status(resolved))
            print(
                json.dumps(statuses, default=str, indent=2) if as_json else format_index(statuses)
            )
            return 0
        outcomes = asyncio.run(index_rebuild(resolved, table))
    for name, outcome in outcomes.items():
        print(f"{name}: {REBUILD_OUTCOMES[outcome]}")
    return 1 if "failed" in outcomes.values() else 0


def keys(settings: Settings, args: argparse.Namespace) -> int:
    """`keys create | list | revoke`, straight on the database (no running service needed)."""
    from memory_service.cli.keys import keys_command

    fields: dict[str, Any] = {}
    if args.action == "create":
        fields = {
            "name": args.name,
            "namespaces": args.namespaces,
            "scopes": args.scopes,
            "expires_at": args.expires_at,
            "allow_cloud": args.allow_cloud,
            "default_namespace": args.default_namespace,
        }
    elif args.action == "revoke":
        fields = {"id_or_name": args.id_or_name}
    with database_url(settings) as url:
        if settings.embedded:
            migrations.upgrade(url)
        resolved = settings.model_copy(update={"database_url": url})
        status, lines = asyncio.run(
            keys_command(
                resolved,
                args.action,
                args.json,
                getattr(args, "output", None),
                getattr(args, "if_missing", False),
                **fields,
            )
        )
    print("\n".join(lines), file=sys.stdout if status == 0 else sys.stderr)
    return status


def providers(settings: Settings, url: str | None) -> int:
    """Print the running service's /v1/providers as a table. Where the service asks for a
    key, MEMORY_API_KEY holds one with the `metrics` scope."""
    import httpx

    base = url or f"http://{settings.host}:{settings.port}"
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{base}/v1/providers", headers=headers, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"cannot read {base}/v1/providers: {exc}", file=sys.stderr)
        return 1
    print(format_providers(response.json()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memory-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    serve_cmd.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default 8080)")
    db_cmd = commands.add_parser("db", help="schema migrations")
    db_actions = db_cmd.add_subparsers(dest="action", required=True)
    upgrade_cmd = db_actions.add_parser("upgrade", help="bring the schema to head")
    upgrade_cmd.add_argument("revision", nargs="?", default="head")
    db_actions.add_parser("current", help="print the schema revision; exit 1 when not at head")
    ingest_cmd = commands.add_parser("ingest", help="chunk, embed and store documents")
    ingest_cmd.add_argument("paths", nargs="+", metavar="PATH", help="files, folders, or - (stdin)")
    ingest_cmd.add_argument("--namespace", required=True)
    ingest_cmd.add_argument(
        "--prune", action="store_true", help="delete documents of the folders whose files are gone"
    )
    ingest_cmd.add_argument(
        "--format", default="txt", choices=["txt", "md", "html", "jsonl"], help="of stdin"
    )
    worker_cmd = commands.add_parser("worker", help="run ingestion jobs from the queue")
    worker_cmd.add_argument(
        "--until-idle", action="store_true", help="exit once no job is due instead of polling"
    )
    index_cmd = commands.add_parser("index", help="ANN vector indexes: status and rebuild")
    index_actions = index_cmd.add_subparsers(dest="action", required=True)
    status_cmd = index_actions.add_parser("status", help="each vector table's index state")
    status_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rebuild_cmd = index_actions.add_parser(
        "rebuild", help="build a fresh index now (concurrently; searches go on meanwhile)"
    )
    rebuild_cmd.add_argument("--table", choices=["memory", "chunk"], help="default: every table")
    keys_cmd = commands.add_parser("keys", help="API keys: create, list, revoke")
    key_actions = keys_cmd.add_subparsers(dest="action", required=True)
    create_cmd = key_actions.add_parser("create", help="make a key; prints it once, last")
    create_cmd.add_argument("--name", required=True)
    create_cmd.add_argument(
        "--namespace",
        action="append",
        required=True,
        dest="namespaces",
        help="a namespace, or a prefix ending in * (repeat for more)",
    )
    create_cmd.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        choices=SCOPES,
        help="repeat for more",
    )
    create_cmd.add_argument("--expires-at", help="ISO 8601 time with a zone; default: never")
    create_cmd.add_argument(
        "--allow-cloud", action="store_true", help="memory content may go to cloud chat"
    )
    create_cmd.add_argument(
        "--default-namespace", help="the namespace MCP calls use when they name none"
    )
    create_cmd.add_argument("--json", action="store_true", help="print JSON (`key` holds it)")
    create_cmd.add_argument(
        "--output", type=Path, help="write the key to this file (mode 0600) instead of printing"
    )
    create_cmd.add_argument(
        "--if-missing", action="store_true", help="succeed, making nothing, if the name exists"
    )
    list_cmd = key_actions.add_parser("list", help="every key (never the secret)")
    list_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    revoke_cmd = key_actions.add_parser("revoke", help="refuse a key from now on")
    revoke_cmd.add_argument("id_or_name", metavar="ID|NAME")
    revoke_cmd.add_argument("--json", action="store_true", help="print JSON")
    mcp_cmd = commands.add_parser("mcp", help="the MCP tools on stdin/stdout (for agent hosts)")
    mcp_cmd.add_argument("--url", help="a running service (default: open the service here)")
    providers_cmd = commands.add_parser("providers", help="print the providers' states as a table")
    providers_cmd.add_argument("--url", help="the service (default http://HOST:PORT from settings)")
    model_commands.add_commands(commands)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run a command. SIGTERM and Ctrl-C unwind like an exception, so the embedded
    PostgreSQL is stopped on the way out (uvicorn re-raises the signal it caught once it
    has shut down); the exit status is then 128 + the signal number, as shells report it."""
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    # pgserver narrates every step of the embedded server's life at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # httpx logs every request at INFO: noise on a command's output (`providers`, probes).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "providers":
            return providers(settings, args.url)
        if args.command == "mcp":
            key = settings.api_key.get_secret_value() if settings.api_key else None
            return mcp(settings, args.url, key)
        if args.command == "ingest":
            return ingest(settings, args.paths, args.namespace, args.prune, args.format)
        if args.command in ("models", "vllm"):
            return model_commands.run(settings, args, os.environ)
        if args.command == "worker":
            return worker(settings, args.until_idle)
        if args.command == "keys":
            return keys(settings, args)
        if args.command == "index":
            return index(
                settings, args.action, getattr(args, "table", None), getattr(args, "json", False)
            )
        if args.action == "upgrade":
            return db_upgrade(settings, args.revision)
        return db_current(settings)
    except StartupError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
