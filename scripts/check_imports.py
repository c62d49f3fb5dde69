"""Print the package-level import graph of `memory_service` and fail on any cycle.

A node is a package directly under `memory_service/` (`memories`, `search`, ...) or a
top-level module (`app`, `api`). Every import counts, wherever it stands: at module level,
inside a function, or under `TYPE_CHECKING`, since a lazy import that closes a cycle is
still a back-edge between domains. Exit status 1 names each cycle (a strongly connected
component of more than one node) and the import statements that make its edges.

    .venv/bin/python -m scripts.check_imports [--root memory_service]
"""

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Graph:
    """Edges between the nodes of one package, with the import sites behind each edge."""

    nodes: set[str] = field(default_factory=set)
    sites: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))

    def edges(self, node: str) -> list[str]:
        return sorted({target for source, target in self.sites if source == node})


def build_graph(root: Path) -> Graph:
    graph = Graph()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        node = relative.parts[0].removesuffix(".py")
        graph.nodes.add(node)
        # The file's package, for relative imports: memory_service/a/b.py is in memory_service.a.
        package = [root.name, *relative.parts[:-1]]
        for line, module in _imports(path, package):
            parts = module.split(".")
            if parts[0] != root.name or len(parts) < 2:
                continue
            target = parts[1]
            if target != node:
                graph.sites[(node, target)].append(f"{path}:{line} imports {module}")
    return graph


def _imports(path: Path, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import in the file; for `from m import n`, `m.n`
    (a module or a name in m: either way the edge goes to m's package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for statement in ast.walk(tree):
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                yield statement.lineno, alias.name
        elif isinstance(statement, ast.ImportFrom):
            if statement.level == 0:
                module = statement.module or ""
            else:
                base = package[: len(package) - statement.level + 1]
                module = ".".join([*base, *filter(None, [statement.module])])
            # `from memory_service import search` names the package in the alias.
            for alias in statement.names:
                yield statement.lineno, f"{module}.{alias.name}"


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.edges(node):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph.nodes):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("memory_service"))
    args = parser.parse_args(argv)
    graph = build_graph(args.root)
    for node in sorted(graph.nodes):
        print(f"{node} -> {', '.join(graph.edges(node)) or '(nothing)'}")
    found = cycles(graph)
    for component in found:
        print(f"\ncycle between packages: {' <-> '.join(component)}", file=sys.stderr)
        for source in component:
            for target in graph.edges(source):
                if target in component:
                    for site in graph.sites[(source, target)]:
                        print(f"  {site}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
