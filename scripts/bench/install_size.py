"""Install size: the core package against the core plus the `local` extra.

Two fresh virtual environments in a temporary folder: one gets `pip install .` (the server,
client and MCP server, embedding through vLLM or Ollama), the other torch 2.13.0 (the CPU
build, as the Makefile and Dockerfile install it first) and `pip install .[local]`. It prints
the size of each environment's site-packages and their difference: what the production
image without torch saves on what it installs (the image's base layers are the same).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.bench.harness import command_line

ROOT = Path(__file__).resolve().parents[2]


def _size(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            path = Path(base) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _install(folder: Path, first: list[str], package: str) -> tuple[int, float]:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    started = time.perf_counter()
    if first:
        subprocess.run([*pip, *first], check=True)
    subprocess.run([*pip, package], check=True)
    (site,) = (folder / "lib").glob("python3*/site-packages")
    return _size(site), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="install-size-") as work:
        core, core_seconds = _install(Path(work) / "core", [], str(ROOT))
        local, local_seconds = _install(Path(work) / "local", ["torch==2.13.0"], f"{ROOT}[local]")
    mib = 1024 * 1024
    print(f"core            {core / mib:8.0f} MiB  (installed in {core_seconds:.0f} s)")
    print(f"core + [local]  {local / mib:8.0f} MiB  (installed in {local_seconds:.0f} s)")
    print(f"saved           {(local - core) / mib:8.0f} MiB  ({1 - core / local:.0%} smaller)")
    print(command_line())


if __name__ == "__main__":
    main()
