"""An embedded PostgreSQL server private to one test module, so a test may crash it.

`pg_ctl stop -m immediate` is a power cut: no checkpoint, WAL replay at the next start. The
server is stopped and deleted by the fixture, not by pgserver: pgserver's stop is a fast
shutdown, which waits forever on a wedged backend, and it would take a zombie postmaster for a
running one.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgserver._commands import POSTGRES_BIN_PATH
from pgserver.postgres_server import PostgresServer, get_server
from pgserver.utils import PostmasterInfo

from memory_service.core import migrations
from tests.conftest import async_url, create_database, with_database


@dataclass
class OwnServer:
    """An embedded PostgreSQL only this module uses, so it may be crashed."""

    server: PostgresServer
    database: str = "memory"

    def libpq_uri(self) -> str:
        return with_database(self.server.get_uri(), self.database)

    def database_url(self) -> str:
        return async_url(self.libpq_uri())

    def crash(self) -> None:
        """Stop as a power cut would. Backends wedged in an LWLock quit too (SIGQUIT, then
        SIGKILL from the postmaster); should pg_ctl fail anyway, the processes are killed."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            subprocess.run(
                [*self._pg_ctl(), "-m", "immediate", "-w", "stop"],
                user=self.server.system_user,
                check=True,
                capture_output=True,
                timeout=30,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _kill_process_tree(pid)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def restart_immediately(self) -> None:
        """`pg_ctl restart -m immediate`: the crash of `crash()`, then a start with the same
        options, WAL replay first. The server logs to the file pgserver gave it (`-l`), so
        it holds none of our pipes."""
        log = self.server.log
        subprocess.run(
            [*self._pg_ctl(), "-m", "immediate", "-w", "-l", str(log), "restart"],
            user=self.server.system_user,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def other_database(self, name: str) -> "OwnServer":
        """A second migrated database on the same server (crashed with it)."""
        create_database(self.server.get_uri(), name)
        other = OwnServer(self.server, name)
        migrations.upgrade(other.database_url())
        return other

    def _pg_ctl(self) -> list[str]:
        return [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.server.pgdata)]

    def _postmaster_pid(self) -> int | None:
        """The running postmaster's. A stopped one can linger as a zombie where init does not
        reap orphans (some containers); pgserver takes that for a running server."""
        info = PostmasterInfo.read_from_pgdata(self.server.pgdata)
        return info.pid if info is not None and _alive(info.pid) else None


def _alive(pid: int) -> bool:
    """Running, and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_process_tree(pid: int) -> None:
    children = []
    with contextlib.suppress(FileNotFoundError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for process in [pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process, signal.SIGKILL)


def own_postgres(prefix: str) -> Iterator[OwnServer]:
    """A migrated server for a module fixture to yield from."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = get_server(root / "pg", cleanup_mode=None)
    own = OwnServer(server)
    try:
        create_database(server.get_uri(), own.database)
        migrations.upgrade(own.database_url())
        yield own
    finally:
        own.crash()
        server.cleanup()  # drops pgserver's handle; stops and deletes nothing
        shutil.rmtree(root, ignore_errors=True)
