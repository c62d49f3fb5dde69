"""The model registry: a folder of downloaded models and the JSON manifest that lists them.

    <models_dir>/manifest.json      {"version": 1, "models": [ModelEntry...]}
    <models_dir>/<owner>--<name>/   one folder per model, the hub repository's files

An entry records the hub id, the commit it was downloaded at, its folder, its size in
bytes, its task (`embed` or `chat`), and when it was downloaded and last used.

`last_used_at` is set whenever a registered model is resolved for use: `models path ID`
and `vllm serve --model ID_OR_FOLDER` (a folder inside the registry counts as its model).
The in-process `local` provider takes a plain folder and does not touch the manifest: it is
loaded once per service start, and a service must not write to a registry it only reads.

Several processes (the CLI, a service's admin endpoint) may update the manifest at once, so
every read-modify-write holds an exclusive `flock` on `<models_dir>/.manifest.lock` and the
file is replaced atomically (write, fsync, rename): a reader never sees half a manifest.
"""

import contextlib
import fcntl
import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory_service.core.errors import Conflict, InvalidRequest, NotFound
from memory_service.core.files import write_atomically

ModelTask = Literal["embed", "chat"]
MANIFEST_VERSION = 1
# A hub id: `name` or `owner/name`, each part a hub-legal name (no `..`, no other slash).
_MODEL_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    revision: str = Field(description="The commit the files were downloaded at.")
    path: Path
    size_bytes: int = Field(ge=0)
    task: ModelTask
    downloaded_at: datetime
    last_used_at: datetime | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = MANIFEST_VERSION
    models: list[ModelEntry] = Field(default_factory=list)


def validate_model_id(model_id: str) -> str:
    """The id unchanged, or InvalidRequest: it names a folder, so it must not escape one."""
    if not _MODEL_ID.fullmatch(model_id):
        raise InvalidRequest(
            f"invalid model id {model_id!r}: expected `owner/name` as on the hub",
            {"model": model_id},
        )
    return model_id


def folder_size(path: Path) -> int:
    """Bytes of the regular files under `path`, huggingface_hub's own `.cache` excluded."""
    total = 0
    for file in path.rglob("*"):
        if file.is_file() and ".cache" not in file.relative_to(path).parts:
            total += file.stat().st_size
    return total


class ModelRegistry:
    """The manifest and folders under `root`; every method is one locked transaction."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest_path = root / "manifest.json"

    def folder_for(self, model_id: str) -> Path:
        return self.root / validate_model_id(model_id).replace("/", "--")

    def entries(self) -> list[ModelEntry]:
        with self._locked() as manifest:
            return sorted(manifest.models, key=lambda entry: entry.id)

    def get(self, model_id: str) -> ModelEntry:
        with self._locked() as manifest:
            return _find(manifest, model_id)

    def record(self, entry: ModelEntry) -> ModelEntry:
        """Add `entry`, replacing an entry of the same id (a re-download)."""
        with self._locked(write=True) as manifest:
            manifest.models = [m for m in manifest.models if m.id != entry.id] + [entry]
        return entry

    def resolve(self, path_or_id: str, *, now: datetime | None = None) -> ModelEntry | None:
        """The registered model named by an id or by its folder, marked used; None when
        `path_or_id` is neither (a folder outside the registry is the caller's business)."""
        with self._locked(write=True) as manifest:
            for entry in manifest.models:
                if entry.id == path_or_id or _same_path(entry.path, path_or_id):
                    entry.last_used_at = now or datetime.now(UTC)
                    return entry.model_copy()
        return None

    def delete(self, model_id: str) -> ModelEntry:
        """Remove the model's folder, then its entry (a crash in between leaves an entry
        whose folder is gone, which `delete` removes on the next try)."""
        with self._locked(write=True) as manifest:
            entry = _find(manifest, model_id)
            if entry.path.resolve().parent != self.root.resolve():
                raise Conflict(
                    f"refusing to delete {entry.path}: it is not a folder of {self.root}",
                    {"model": model_id},
                )
            shutil.rmtree(entry.path, ignore_errors=True)
            manifest.models = [m for m in manifest.models if m.id != model_id]
            return entry

    @contextlib.contextmanager
    def _locked(self, *, write: bool = False) -> Iterator[Manifest]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".manifest.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self._read()
            yield manifest
            if write:
                self._write(manifest)

    def _read(self) -> Manifest:
        try:
            raw = self.manifest_path.read_text()
        except FileNotFoundError:
            return Manifest()
        try:
            return Manifest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise Conflict(
                f"the model manifest {self.manifest_path} is unreadable: {exc}; fix or remove it"
            ) from exc

    def _write(self, manifest: Manifest) -> None:
        manifest.models.sort(key=lambda entry: entry.id)
        write_atomically(self.manifest_path, manifest.model_dump_json(indent=2))


def _find(manifest: Manifest, model_id: str) -> ModelEntry:
    for entry in manifest.models:
        if entry.id == model_id:
            return entry
    raise NotFound(
        f"model {model_id!r} is not in the registry: `memory-service models download "
        f"{model_id}` first",
        {"model": model_id},
    )


def _same_path(path: Path, candidate: str) -> bool:
    with contextlib.suppress(OSError):
        return path.resolve() == Path(candidate).expanduser().resolve()
    return False
