"""CLI glue: `memory-service models list|download|delete|path` and `vllm serve|stop|status`.

Each command prints its result on stdout, or one `error: ...` line on stderr (the message
says what to do) and exits 1. `vllm serve` passes everything after `--` to vLLM verbatim.
"""

import argparse
import asyncio
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from memory_service.cli.output import table_lines
from memory_service.core.errors import MemoryServiceError
from memory_service.core.settings import Settings
from memory_service.serving.manifest import ModelEntry, ModelRegistry
from memory_service.serving.schemas import ServeRequest, ServerStatus


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    models = commands.add_parser("models", help="the local model registry")
    model_actions = models.add_subparsers(dest="action", required=True)
    model_actions.add_parser("list", help="registered models")
    download = model_actions.add_parser("download", help="download a model from the hub")
    download.add_argument("model_id", metavar="ID", help="hub id: owner/name")
    download.add_argument("--revision", default="main", help="branch, tag or commit")
    download.add_argument("--task", choices=["embed", "chat"], required=True)
    delete = model_actions.add_parser("delete", help="remove a model's files and entry")
    delete.add_argument("model_id", metavar="ID")
    path = model_actions.add_parser("path", help="print a model's folder (marks it used)")
    path.add_argument("model_id", metavar="ID")

    vllm = commands.add_parser("vllm", help="start, stop and list local vLLM servers")
    vllm_actions = vllm.add_subparsers(dest="action", required=True)
    serve = vllm_actions.add_parser("serve", help="start a vLLM server and register it")
    serve.add_argument("--model", required=True, help="a registered model id or a folder")
    serve.add_argument("--served-model-name", required=True)
    serve.add_argument("--runner", choices=["pooling", "generate"], required=True)
    serve.add_argument("--port", dest="vllm_port", type=int, default=8001)
    serve.add_argument("--host", dest="vllm_host", default="127.0.0.1")
    serve.add_argument("--name", help="registration name (default: the served model name)")
    serve.add_argument("--space", help="embedding space of a pooling server (default: ours)")
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then vLLM's own flags")
    stop = vllm_actions.add_parser("stop", help="stop a server and remove its registration")
    stop.add_argument("name")
    vllm_actions.add_parser("status", help="registered servers: process alive, health")


def run(settings: Settings, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run a `models` or `vllm` command; 1 with a one-line error when it is refused."""
    try:
        if args.command == "models":
            return _models(settings, args, environ)
        return _vllm(settings, args, environ)
    except MemoryServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _models(settings: Settings, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    registry = ModelRegistry(settings.model_registry_dir)
    if args.action == "list":
        print(format_models(registry.entries(), registry.root))
    elif args.action == "download":
        from memory_service.serving.hub import download_model

        entry = download_model(
            registry,
            args.model_id,
            task=args.task,
            revision=args.revision,
            endpoint=settings.hub_endpoint,
            environ=environ,
        )
        print(f"{entry.id} {entry.revision} {_size(entry.size_bytes)} {entry.path}")
    elif args.action == "delete":
        entry = registry.delete(args.model_id)
        print(f"deleted {entry.id} ({_size(entry.size_bytes)}, {entry.path})")
    else:
        # `get` raises the not-registered error when `resolve` finds nothing.
        print((registry.resolve(args.model_id) or registry.get(args.model_id)).path)
    return 0


def _vllm(settings: Settings, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from memory_service.serving.lifecycle import VllmManager

    manager = VllmManager(settings, environ)
    if args.action == "serve":
        extra = args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args
        request = ServeRequest(
            model=args.model,
            served_model_name=args.served_model_name,
            runner=args.runner,
            port=args.vllm_port,
            host=args.vllm_host,
            name=args.name,
            space=args.space,
            extra_args=extra,
        )
        registration = asyncio.run(manager.serve(request))
        print(
            f"{registration.name}: {registration.base_url} pid {registration.pid} "
            f"({registration.runner}, logs in {registration.log_dir})"
        )
    elif args.action == "stop":
        result = manager.stop(args.name)
        print(f"{result.name}: {result.outcome}")
    else:
        print(format_servers(asyncio.run(manager.status())))
    return 0


def format_models(entries: list[ModelEntry], root: Path) -> str:
    if not entries:
        return f"no models in {root}"
    rows: list[tuple[str, ...]] = [("id", "task", "size", "revision", "last used", "path")]
    for entry in entries:
        rows.append(
            (
                entry.id,
                entry.task,
                _size(entry.size_bytes),
                entry.revision[:12],
                _when(entry.last_used_at),
                str(entry.path),
            )
        )
    return "\n".join(table_lines(rows))


def format_servers(statuses: list[ServerStatus]) -> str:
    if not statuses:
        return "no vLLM servers registered"
    rows: list[tuple[str, ...]] = [
        ("name", "runner", "served model", "url", "pid", "alive", "healthy", "detail")
    ]
    for status in statuses:
        r = status.registration
        rows.append(
            (
                r.name,
                r.runner,
                r.served_model,
                r.base_url,
                str(r.pid),
                "yes" if status.alive else "no",
                "yes" if status.healthy else "no",
                status.detail,
            )
        )
    return "\n".join(table_lines(rows))


def _size(size_bytes: int) -> str:
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size_bytes} B"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"
