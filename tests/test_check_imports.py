"""`scripts/check_imports.py`: the package graph of the real tree has no cycle, and a cycle
in a package laid out like it is found and named with its import sites."""

from pathlib import Path

import pytest

from scripts.check_imports import build_graph, cycles, main


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_service_has_no_cycle_between_its_packages() -> None:
    graph = build_graph(Path("memory_service"))
    assert {"core", "memories", "search", "cli", "app"} <= graph.nodes
    assert "search" in graph.edges("gateway")
    assert cycles(graph) == []


def test_a_cycle_through_a_lazy_and_a_relative_import_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "memory_service"
    write(root, "__init__.py", "")
    write(root, "core/__init__.py", "")
    write(root, "a/__init__.py", "")
    write(root, "a/one.py", "from memory_service.core import x\nfrom ..b import two\n")
    write(root, "b/__init__.py", "")
    write(root, "b/two.py", "def f() -> None:\n    from memory_service import a\n")
    write(root, "app.py", "import memory_service.a.one\n")

    assert main(["--root", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "a -> b, core" in out
    assert "app -> a" in out
    assert "cycle between packages: a <-> b" in err
    assert f"{root / 'a' / 'one.py'}:2 imports memory_service.b.two" in err
    assert f"{root / 'b' / 'two.py'}:2 imports memory_service.a" in err
