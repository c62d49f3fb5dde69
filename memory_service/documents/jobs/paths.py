"""The allow-list of server-side paths (`MEMORY_INGEST_ALLOWED_PATHS`).

A job may name a file or folder on the server only inside one of the allowed folders, and
"inside" is decided on resolved paths: `..` and symlinks are followed first, so neither
escapes. The check runs twice: at submission (a clear 4xx, nothing queued) and again when
a worker walks the folder, because a folder may hold a symlink to a file elsewhere; such a
file is not read and is reported as a per-document failure. An empty list refuses every
path: serving files from disk is opt-in.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

from memory_service.core.errors import Forbidden, InvalidRequest


def allowed_path(raw: str, allowed: Sequence[Path]) -> Path:
    """The resolved path a job may ingest, or a 4xx saying why not (nothing is read)."""
    if not allowed:
        raise Forbidden(
            "server-side paths are disabled: the operator allows none "
            "(MEMORY_INGEST_ALLOWED_PATHS); send the documents inline instead",
            {"field": "path"},
        )
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidRequest("path must be absolute", {"field": "path", "path": raw})
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise InvalidRequest(f"path cannot be resolved: {exc}", {"field": "path"}) from exc
    if outside(resolved, allowed):
        raise Forbidden(
            "path is outside the folders this service may read",
            {"field": "path", "path": raw, "allowed": [str(root) for root in allowed]},
        )
    if not resolved.exists():
        raise InvalidRequest("no such file or folder", {"field": "path", "path": raw})
    return resolved


def outside(resolved: Path, allowed: Sequence[Path]) -> bool:
    """True unless `resolved` (already resolved) lies in or is one of the allowed folders."""
    return not any(resolved.is_relative_to(root.resolve()) for root in allowed)


def refuse_outside(allowed: Sequence[Path]) -> Callable[[Path], str | None]:
    """For `loaders.iter_documents(refuse=...)`: files a walk reaches outside the list."""
    roots = [root.resolve() for root in allowed]

    def refuse(resolved: Path) -> str | None:
        if any(resolved.is_relative_to(root) for root in roots):
            return None
        return "not read: a symlink leads outside the allowed folders"

    return refuse
