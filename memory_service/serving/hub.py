"""`models download`: a hub repository into the registry, through huggingface_hub (2.x).

The revision (branch, tag or commit) is resolved to a commit first (`HfApi.model_info`,
`GET /api/models/{id}/revision/{rev}`), and the files are fetched at that commit with
`snapshot_download(local_dir=...)`, so the manifest records exactly what is on disk even if
the branch moves during the download. huggingface_hub lists the tree
(`GET /api/models/{id}/tree/{commit}?recursive=...`), asks each file's metadata with
`HEAD /{id}/resolve/{commit}/{path}` (X-Repo-Commit, ETag or X-Linked-Etag, Content-Length or
X-Linked-Size; large files redirect to a CDN) and streams it with `GET`.

Resume, at two levels, both huggingface_hub's own:
- within a run, a connection dropped mid-file is retried with `Range: bytes=<received>-`,
  appending to the partial file (up to 5 times without progress);
- across runs, files already complete in the folder (their `.cache/huggingface` metadata
  names the same commit) are skipped, so a re-run after Ctrl-C fetches only what is missing.
A partially written file of an interrupted run is not reused (huggingface_hub 2.x writes
each attempt to a process-unique temporary file).

Progress: huggingface_hub's progress bars on stderr (bytes and files), plus a log line per
phase. Offline (`HF_HUB_OFFLINE`), an unreachable hub, an unknown model or revision are
clear errors naming the model and what to do; nothing is recorded then.
"""

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from memory_service.core.errors import NotFound
from memory_service.serving.errors import HubUnreachable
from memory_service.serving.manifest import (
    ModelEntry,
    ModelRegistry,
    ModelTask,
    folder_size,
    validate_model_id,
)

log = logging.getLogger(__name__)

_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_HUB_ERRORS = (HfHubHTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.TransportError)


def download_model(
    registry: ModelRegistry,
    model_id: str,
    *,
    task: ModelTask,
    revision: str = "main",
    endpoint: str | None = None,
    environ: Mapping[str, str],
) -> ModelEntry:
    """Download `model_id` at `revision` into the registry and record it; return the entry.

    `environ` is the entry point's environment, read for HF_HUB_OFFLINE only (huggingface_hub
    reads its own variables, HF_TOKEN among them, itself)."""
    validate_model_id(model_id)
    hub = endpoint or constants.ENDPOINT
    _refuse_offline(model_id, environ)
    folder = registry.folder_for(model_id)
    try:
        commit = HfApi(endpoint=endpoint).model_info(model_id, revision=revision).sha
        if commit is None:
            raise HubUnreachable(f"{hub} answered without a commit for {model_id}@{revision}")
        log.info(
            "downloading %s@%s (commit %s) from %s into %s",
            model_id,
            revision,
            commit,
            hub,
            folder,
        )
        snapshot_download(model_id, revision=commit, local_dir=folder, endpoint=endpoint)
    except _HUB_ERRORS as exc:
        raise _translated(exc, model_id, revision, hub) from exc
    entry = ModelEntry(
        id=model_id,
        revision=commit,
        path=folder,
        size_bytes=folder_size(folder),
        task=task,
        downloaded_at=datetime.now(UTC),
    )
    log.info("downloaded %s: %d bytes in %s", model_id, entry.size_bytes, folder)
    return registry.record(entry)


def _refuse_offline(model_id: str, environ: Mapping[str, str]) -> None:
    """Offline mode as set in `environ` or as huggingface_hub read it at import."""
    offline = any(environ.get(name, "").upper() in _TRUE for name in _OFFLINE_VARIABLES)
    if offline or constants.is_offline_mode():
        raise HubUnreachable(
            f"cannot download {model_id}: offline mode is on (HF_HUB_OFFLINE or "
            "TRANSFORMERS_OFFLINE is set). Unset it and run the download again, or download "
            "on a machine with network access and copy the model folder here.",
            {"model": model_id, "reason": "offline"},
        )


def _translated(exc: Exception, model_id: str, revision: str, hub: str) -> Exception:
    details = {"model": model_id, "revision": revision, "hub": hub}
    if isinstance(exc, GatedRepoError):
        return NotFound(
            f"{model_id} is gated on {hub}: accept its terms on the hub and set HF_TOKEN",
            details,
        )
    if isinstance(exc, RepositoryNotFoundError):
        return NotFound(
            f"no model {model_id} on {hub} (check the id; a private model needs HF_TOKEN)",
            details,
        )
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"{model_id} has no revision {revision!r} on {hub}", details)
    return HubUnreachable(
        f"cannot download {model_id}: the hub {hub} is unreachable or failing "
        f"({type(exc).__name__}: {_first_line(exc)}). Check the network (or "
        "MEMORY_HUB_ENDPOINT / HF_ENDPOINT) and run the download again; files already "
        "complete are kept and skipped.",
        details,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
