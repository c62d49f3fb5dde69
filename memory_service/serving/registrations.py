"""Registrations of the vLLM servers `vllm serve` started: one JSON file per server.

    <data_dir>/vllm/<name>.json     the registration (this module)
    <data_dir>/vllm/<name>/         its logs: stdout.log, stderr.log

A registration is written once the server answers `GET /health` and removed by `vllm stop`.
The files are the contract between the process that starts a server (the CLI, or a
service's admin endpoint) and every service on the host that should use it: a service's
discovery reads them on each probe round (see `refresh`). `generate` servers are recorded
for chat routing, which reads them with `read_registrations(dir, runner="generate")`.
"""

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory_service.core.errors import InvalidRequest, NotFound
from memory_service.core.files import write_atomically

log = logging.getLogger(__name__)

Runner = Literal["pooling", "generate"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class VllmRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    pid: int = Field(gt=0, description="The server's process, leader of its process group.")
    port: int = Field(ge=1, le=65_535)
    base_url: str = Field(description="The server root, without /v1.")
    served_model: str
    model: str = Field(description="What `--model` was given: a folder, or a registry id.")
    runner: Runner
    space: str = Field(description="The embedding space a pooling server is declared for.")
    started_at: datetime
    log_dir: Path


def validate_name(name: str) -> str:
    """The name unchanged, or InvalidRequest: it names files, so it must be a plain word."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise InvalidRequest(
            f"invalid server name {name!r}: letters, digits, - and _ only (at most 64); "
            "pass --name when the served model name has other characters",
            {"name": name},
        )
    return name


def registration_path(directory: Path, name: str) -> Path:
    return directory / f"{validate_name(name)}.json"


def log_dir_for(directory: Path, name: str) -> Path:
    return directory / validate_name(name)


def read_registrations(directory: Path, runner: Runner | None = None) -> list[VllmRegistration]:
    """Every readable registration (of `runner`, when given), by name. An unreadable file
    is logged and skipped: one bad file must not hide the other servers."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            registration = VllmRegistration.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            log.warning("skipping unreadable vLLM registration %s: %s", path, exc)
            continue
        if runner is None or registration.runner == runner:
            found.append(registration)
    return found


def read_registration(directory: Path, name: str) -> VllmRegistration:
    path = registration_path(directory, name)
    try:
        return VllmRegistration.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"no vLLM server named {name!r} is registered", {"name": name}) from None


def write_registration(directory: Path, registration: VllmRegistration) -> None:
    """Atomically: a reader sees the old file, no file, or the whole new one."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(
        registration_path(directory, registration.name), registration.model_dump_json(indent=2)
    )


def remove_registration(directory: Path, name: str) -> None:
    registration_path(directory, name).unlink(missing_ok=True)
