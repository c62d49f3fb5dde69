"""Fixtures of the model registry and vLLM lifecycle tests."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings
from memory_service.serving.launcher import is_vllm_server, terminate_group
from memory_service.serving.refresh import RegistrationWatcher
from memory_service.serving.registrations import read_registrations

ROOT = Path(__file__).resolve().parents[2]
FAKE_VLLM = Path(__file__).parent / "fake_vllm"


def watcher_of(
    resources: Resources, settings: Settings, http: httpx.AsyncClient
) -> RegistrationWatcher:
    """The registrations watcher of a service opened over its provider registries."""
    assert resources.providers is not None
    return RegistrationWatcher(
        providers=resources.providers, space=resources.space, settings=settings, http=http
    )


def child_environ(**extra: str) -> dict[str, str]:
    """This process's environment without our settings, with the fake `vllm` importable."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MEMORY_", "VLLM_FAKE_", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_VLLM), str(ROOT)])
    env.update(extra)
    return env


@pytest.fixture
def lifecycle_settings(settings: Settings) -> Iterator[Settings]:
    """The test settings, starting "vLLM" with this interpreter (the fake package). Servers
    a failed test left registered are stopped afterwards."""
    lifecycle = settings.model_copy(
        update={
            "vllm_python": Path(sys.executable),
            "vllm_health_timeout_seconds": 180.0,
            "vllm_stop_timeout_seconds": 15.0,
            "vllm_cpu_threads_bind": "0",
        }
    )
    yield lifecycle
    for registration in read_registrations(lifecycle.vllm_dir):
        if is_vllm_server(registration.pid):
            terminate_group(registration.pid, lifecycle.vllm_stop_timeout_seconds)
