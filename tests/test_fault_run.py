"""The fault run: nothing acknowledged is lost while everything the service depends on fails.

A real `memory-service serve` embeds through a vLLM-compatible server running the bundled
model in a process of its own (`tests.servers.serve_embedder`; the service has no local
model) and stores in an embedded PostgreSQL private to this module. Sixteen writers store
unique memories, twelve one at a time and four in batches of eight, retrying an unanswered
or 503-answered write with the same content (a repeat of a stored content is answered with
the stored memory). Under that load, in turn:

1. the embedder is SIGKILLed, writes go on (stores answer `pending`), then it is restarted;
2. PostgreSQL is crash-restarted (`pg_ctl restart -m immediate`: no checkpoint, WAL replay);
3. the service gets SIGTERM, must exit, and is started again on the same port.

Each phase lasts until the writers have had a number of writes acknowledged in it. Then the
writers stop, and once the reconciler has embedded every pending row:

- every acknowledged memory is read back through the API, with its content, `embedded`;
- every content is stored once (no row twice, no acknowledged id replaced by another);
- every row's vector is the model's vector of that row's content;
- no write was answered with a status other than 200, 201 or 503.

A second test crashes PostgreSQL while the reconciler embeds a batch it claimed: the batch it
could not give back then is given back by its next pass, not left to its claim's lapse.

Time only bounds the run (a phase that cannot finish fails, with the service's log); nothing
asserts on durations.
"""

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from tests.apps import free_port, http_app
from tests.fakes import FlakyProvider
from tests.memories.factories import memory_body
from tests.own_postgres import OwnServer, own_postgres
from tests.servers import ModelFns
from tests.test_cli import COMMAND, ROOT, clean_env

pytestmark = pytest.mark.slow

WRITERS = 16
BATCH_WRITERS = 4  # of the sixteen, these store eight memories a request
BATCH = 8
ACKS_PER_PHASE = 200
NAMESPACE = "fault-run"
DIMENSION = 384
PHASE_LIMIT_SECONDS = 120.0
START_LIMIT_SECONDS = 120.0
DRAIN_LIMIT_SECONDS = 180.0
RETRY_PAUSE_SECONDS = 0.1
REQUEST_TIMEOUT_SECONDS = 30.0
WEDGED_SECONDS = 60.0


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    yield from own_postgres("memory-fault-run-")


def wait_for(condition: Any, limit: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = "\n".join(log.read_text().splitlines()[-60:]) if log and log.exists() else ""
    pytest.fail(f"{what}: not within {limit:.0f} s\n{tail}")


def answers_health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _kill(process: "subprocess.Popen[bytes] | None") -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


@dataclass
class Embedder:
    """`tests.servers.serve_embedder` in its own process, on a fixed port."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.servers.serve_embedder", "--port", str(self.port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: answers_health(self.url), START_LIMIT_SECONDS, "embedder up", self.log)

    def kill(self) -> None:
        _kill(self.process)


@dataclass
class Service:
    """`memory-service serve` on a fixed port, its output in a file per start."""

    port: int
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.logs / f"serve-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [COMMAND, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = self.process
        wait_for(
            lambda: process.poll() is not None or answers_health(self.url),
            START_LIMIT_SECONDS,
            "serve up",
            self.log,
        )
        assert process.poll() is None, self.log.read_text()

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=START_LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit after SIGTERM\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        _kill(self.process)


@dataclass
class Ledger:
    """What the writers were told: the acknowledged id of every content, and every answer
    that was neither an acknowledgement nor a 503."""

    acked: dict[str, str] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)  # a content acknowledged under two ids
    unexpected: list[str] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    phase: str = "start"
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, content: str, memory_id: str, status: str) -> None:
        with self.lock:
            self.statuses[self.phase, status] += 1
            if self.acked.setdefault(content, memory_id) != memory_id:
                self.replaced.append(content)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def write(client: httpx.Client, url: str, contents: list[str], ledger: Ledger) -> bool:
    """One attempt; True when acknowledged. A 503 or a lost connection is retried by the
    caller with the same contents; any other answer is recorded as unexpected."""
    items = [{"namespace": NAMESPACE, "content": content} for content in contents]
    try:
        if len(items) == 1:
            response = client.post(f"{url}/v1/memories", json=items[0])
        else:
            response = client.post(f"{url}/v1/memories/batch", json={"items": items})
    except httpx.TransportError as exc:
        ledger.retries[type(exc).__name__] += 1
        return False
    if response.status_code == 503:
        ledger.retries[f"503 {response.json()['error']['type']}"] += 1
        return False
    if response.status_code not in (200, 201):
        ledger.unexpected.append(f"{response.status_code} {response.text[:300]}")
        return False
    body = response.json()
    answered = body["items"] if len(items) > 1 else [body]
    for content, item in zip(contents, answered, strict=True):
        ledger.ack(content, item["id"], item["status"])
    return True


def writer(number: int, url: str, ledger: Ledger, stop: threading.Event) -> None:
    size = BATCH if number < BATCH_WRITERS else 1
    with httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS) as client:
        for sequence in range(10**9):
            contents = [
                f"Writer {number} stored note {sequence}.{part} about the fault run."
                for part in range(size)
            ]
            while not stop.is_set():
                if write(client, url, contents, ledger):
                    break
                time.sleep(RETRY_PAUSE_SECONDS)
            if stop.is_set():
                return


def read_acknowledged(url: str, ledger: Ledger) -> dict[str, str]:
    """Each acknowledged content's status as the API reads it back by its acknowledged id
    (an answer other than that memory is recorded as its status)."""
    seen: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        for content, memory_id in ledger.acked.items():
            response = client.get(f"/v1/memories/{memory_id}")
            body = response.json()
            if response.status_code != 200 or body["content"] != content:
                seen[content] = f"{response.status_code} {response.text[:200]}"
            else:
                seen[content] = body["status"]
    return seen


def unembedded(libpq_uri: str) -> int:
    with psycopg.connect(libpq_uri, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM memory WHERE status <> 'embedded'").fetchone()
    assert row is not None
    count: int = row[0]
    return count


def test_acknowledged_writes_survive_embedder_database_and_service_failures(
    tmp_path: Path, own_server: OwnServer, model_fns: ModelFns
) -> None:
    embedder = Embedder(free_port(), tmp_path / "embedder.log")
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        f"spaces:\n  default: {{model: all-MiniLM-L6-v2, dimension: {DIMENSION}, "
        "normalized: true}\n"
        "providers:\n"
        f'  - {{name: vllm, kind: vllm, base_url: "{embedder.url}", model: all-MiniLM-L6-v2,\n'
        "      space: default, connect_timeout: 1, read_timeout: 10}\n"
    )
    service = Service(
        free_port(),
        clean_env(
            MEMORY_DATABASE_URL=own_server.database_url(),
            MEMORY_PROVIDERS_FILE=str(providers),
            MEMORY_PROBE_INTERVAL_SECONDS="1",
            MEMORY_BREAKER_COOLDOWN_SECONDS="1",
            MEMORY_RECONCILE_INTERVAL_SECONDS="0.5",
            MEMORY_INLINE_EMBED_SECONDS="5",
            MEMORY_SHUTDOWN_TIMEOUT_SECONDS="5",
        ),
        tmp_path,
    )
    ledger = Ledger()
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(n, service.url, ledger, stop), daemon=True)
        for n in range(WRITERS)
    ]

    def phase(what: str) -> None:
        ledger.phase = what
        target = ledger.count() + ACKS_PER_PHASE
        wait_for(lambda: ledger.count() >= target, PHASE_LIMIT_SECONDS, what, service.log)

    try:
        embedder.start()
        service.start()
        assert service.process is not None
        # Embedding through a remote server only, the service never loads torch.
        assert "libtorch" not in Path(f"/proc/{service.process.pid}/maps").read_text()
        for thread in threads:
            thread.start()
        phase("writes before any fault")

        embedder.kill()
        phase("writes with the embedder killed")
        embedder.start()
        phase("writes after the embedder restarted")

        own_server.restart_immediately()
        phase("writes after PostgreSQL crashed and restarted")

        exit_code = service.terminate()
        assert exit_code == 128 + signal.SIGTERM, service.log.read_text()[-4000:]
        service.start()
        phase("writes after the service restarted")

        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_SECONDS + 5)
        uri = own_server.libpq_uri()
        wait_for(lambda: unembedded(uri) == 0, DRAIN_LIMIT_SECONDS, "all embedded", service.log)
        read_back = read_acknowledged(service.url, ledger)
    finally:
        stop.set()
        service.kill()
        embedder.kill()

    # The embedder was down for those writes: they were stored, and embedded later.
    assert ledger.statuses["writes with the embedder killed", "pending"] > 0, ledger.statuses
    assert not ledger.unexpected, ledger.unexpected[:10]
    assert not ledger.replaced, ledger.replaced[:10]
    assert read_back == {content: "embedded" for content in ledger.acked}
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT id::text, content, embedding::text FROM memory WHERE namespace = %s",
            (NAMESPACE,),
        ).fetchall()
    stored = Counter(content for _, content, _ in rows)
    assert [content for content, times in stored.items() if times > 1] == []
    by_content = {content: memory_id for memory_id, content, _ in rows}
    assert {c: by_content.get(c) for c in ledger.acked} == ledger.acked
    contents = [content for _, content, _ in rows]
    expected = np.concatenate(
        [model_fns.embed(contents[i : i + 256]) for i in range(0, len(contents), 256)]
    )
    for (_, content, embedding), vector in zip(rows, expected, strict=True):
        stored_vector = np.array(embedding.strip("[]").split(","), dtype=np.float32)
        assert float(stored_vector @ vector) > 0.999, content
    print(  # shown with -s: how much the faults were felt
        f"{len(ledger.acked)} acknowledged, {len(rows)} stored, retries {dict(ledger.retries)}, "
        f"answers {dict(ledger.statuses)}"
    )


async def test_a_batch_the_database_lost_is_given_back_by_the_next_pass(
    own_server: OwnServer, settings: Settings, embedder: FlakyProvider
) -> None:
    # A database of its own: the fault run's rows are not this reconciler's business.
    database = own_server.other_database("reconciler")
    configured = settings.model_copy(update={"database_url": database.database_url()})
    async with open_resources(configured, embedder=embedder) as resources:
        async with http_app(configured, resources) as client:
            embedder.down = True
            for number in range(3):
                body = memory_body(f"The batch the database lost, note {number}.")
                assert (await client.post("/v1/memories", json=body)).json()["status"] == "pending"
        embedder.down = False
        embedder.hold = asyncio.Event()
        reconciling = asyncio.create_task(resources.reconciler.run_once())
        await asyncio.wait_for(embedder.waiting.wait(), WEDGED_SECONDS)
        # The batch is claimed and being embedded; its claim lasts 600 s.
        await asyncio.to_thread(database.crash)
        embedder.hold.set()
        with pytest.raises(DBAPIError):  # neither its vectors nor the give-back can be written
            await asyncio.wait_for(reconciling, WEDGED_SECONDS)
        await asyncio.to_thread(database.start)
        embedder.hold = None
        report = await asyncio.wait_for(resources.reconciler.run_once(), WEDGED_SECONDS)
    assert report.embedded == 3
