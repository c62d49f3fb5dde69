"""`memory-service keys create | list | revoke`: API keys, straight on the database.

No running service is needed, so the first admin key can be made before the service is
exposed. `create` prints the key once, as the last line of its output (or the `key` field
with `--json`), or writes it to `--output FILE` (mode 0600) instead; only its SHA-256 is
stored. `--if-missing` makes nothing, successfully, when a key of that name exists: what a
deployment's one-shot setup step needs (docker-compose.yml).
"""

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memory_service.auth.service import KeyInfo, KeyService
from memory_service.cli.output import table_lines
from memory_service.core.db import create_engine, ensure_schema_at_head
from memory_service.core.errors import Conflict, MemoryServiceError
from memory_service.core.files import write_atomically
from memory_service.core.settings import Settings


async def _run(settings: Settings, action: str, **fields: Any) -> tuple[Any, str | None]:
    assert settings.database_url is not None
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        await ensure_schema_at_head(engine)
        keys = KeyService(engine=engine)
        if action == "create":
            return await keys.create(**fields)
        if action == "list":
            return await keys.list(), None
        return await keys.revoke(fields["id_or_name"]), None
    finally:
        await engine.dispose()


async def keys_command(
    settings: Settings,
    action: str,
    as_json: bool,
    output: Path | None = None,
    if_missing: bool = False,
    **fields: Any,
) -> tuple[int, list[str]]:
    """The exit status and the lines to print."""
    if action == "create" and fields.get("expires_at") is not None:
        try:
            fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
        except ValueError:
            return 1, [f"--expires-at {fields['expires_at']!r}: not an ISO 8601 time"]
    try:
        result, key = await _run(settings, action, **fields)
    except Conflict as exc:
        if if_missing:
            return 0, [f"{exc.message}: nothing made (--if-missing)"]
        return 1, [exc.message]
    except MemoryServiceError as exc:
        return 1, [exc.message]
    if action == "list":
        infos: list[KeyInfo] = result
        if as_json:
            return 0, [json.dumps([asdict(info) for info in infos], default=str, indent=2)]
        return 0, _table(infos)
    info: KeyInfo = result
    if key is not None and output is not None:
        write_atomically(output, key + "\n", mode=0o600)
        if as_json:
            return 0, [json.dumps(asdict(info) | {"key_file": str(output)}, default=str, indent=2)]
        return 0, [*_table([info]), "", f"The key is in {output} (mode 0600)."]
    if as_json:
        body = asdict(info) | ({"key": key} if key is not None else {})
        return 0, [json.dumps(body, default=str, indent=2)]
    lines = _table([info])
    if key is not None:
        lines += ["", "The key (shown once, store it now):", key]
    return 0, lines


def _table(infos: list[KeyInfo]) -> list[str]:
    if not infos:
        return ["no keys"]
    rows = [("id", "name", "scopes", "cloud", "expires", "state", "namespaces")]
    for info in infos:
        state = "revoked" if info.revoked_at else "active"
        if not info.revoked_at and info.expires_at and info.expires_at <= datetime.now(UTC):
            state = "expired"
        rows.append(
            (
                str(info.id),
                info.name,
                ",".join(info.scopes),
                "yes" if info.allow_cloud else "no",
                info.expires_at.isoformat() if info.expires_at else "never",
                state,
                " ".join(info.namespaces),
            )
        )
    return table_lines(rows)
