"""Schemathesis over every route of a running `serve`: no generated request, valid by the
OpenAPI schema or not, gets a 5xx.

The service runs as an operator starts it (embedded-default model, the test database, auth
off on loopback) and its own `/openapi.json` drives generation. Each operation gets
`EXAMPLES` schema-valid and `EXAMPLES` schema-invalid cases (Hypothesis, derandomized, so a
run is repeatable), each answer judged by schemathesis's own `not_a_server_error` check. A
chat route has no provider here and answers 503 `chat_unavailable` by design: that is the
one 5xx allowed, and only there.
"""

import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from tests.apps import free_port
from tests.conftest import async_url, create_database, drop_database, with_database
from tests.test_cli import COMMAND, clean_env, wait_until_healthy

pytestmark = pytest.mark.slow

EXAMPLES = 25
# 503s the design gives: no chat provider is configured here.
EXPECTED_UNAVAILABLE = {("POST", "/v1/chat/completions")}


@pytest.fixture(scope="module")
def base_url(
    template_database: str, pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    name = "fuzz"
    create_database(pg_server_uri, name, template=template_database)
    port = free_port()
    # Its log goes to a file: a pipe nobody reads fills up and blocks the server's writes.
    log = (tmp_path_factory.mktemp("fuzz") / "serve.log").open("w")
    process = subprocess.Popen(
        [COMMAND, "serve", "--port", str(port)],
        env=clean_env(
            MEMORY_DATABASE_URL=async_url(with_database(pg_server_uri, name)),
            MEMORY_RECONCILER="false",
            MEMORY_INDEX_MAINTAINER="false",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_healthy(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        log.close()
        drop_database(pg_server_uri, name)


def test_no_generated_request_gets_a_server_error(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"an operation the schema cannot describe: {result.err()}")
            continue
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz(operation, mode, base_url, statuses)
    assert operations > 20, "the schema lists fewer routes than the service has"
    print(f"{sum(statuses.values())} requests over {operations} operations: {dict(statuses)}")
    assert statuses[200] + statuses[201] > 50, f"few requests were accepted: {dict(statuses)}"
    assert statuses[422] > 50, f"few requests were refused as invalid: {dict(statuses)}"
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:20])


def fuzz(operation: Any, mode: GenerationMode, base_url: str, statuses: Counter[int]) -> list[str]:
    """EXAMPLES cases of `operation` in `mode`; each server error, described. Counts every
    answer's status into `statuses`."""
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=60)
        statuses[response.status_code] += 1
        allowed = (case.method.upper(), case.path) in EXPECTED_UNAVAILABLE
        if allowed and response.status_code == 503:
            return
        try:  # schemathesis's own check
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup as failed:
            failures.append(
                f"{case.method.upper()} {case.formatted_path} ({mode.value}): "
                f"{response.status_code} {response.text[:200]} ({failed.message})"
            )

    try:
        call()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # Nothing of this operation can be made invalid (no parameters, no body).
    return failures
