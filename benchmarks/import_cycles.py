"""Import cycles among advbench's modules, counting imports inside functions too (the project asks
for none). Prints each cycle; exits 1 when there is one.

    python benchmarks/import_cycles.py
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"harness": "advbench.harness", "estimators": "advbench.estimators"}


def imports(path: Path, package: str) -> set[str]:
    """The advbench modules a file imports (``from advbench.harness import x`` counts as x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("advbench"):
            if node.module == "advbench" or node.module in PACKAGE_NAMES:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("advbench")}
    return found


PACKAGE_NAMES = {
    ".".join([package, *path.parent.relative_to(ROOT / folder).parts])
    for folder, package in PACKAGES.items()
    for path in (ROOT / folder).rglob("__init__.py")
}


def graph() -> dict[str, set[str]]:
    edges = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            edges[name] = imports(path, package)
    return edges


def cycles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in edges.get(node, ()):
            if nxt in path:
                found.add(tuple(sorted(path[path.index(nxt) :])))
            elif nxt in edges:
                walk(nxt, [*path, nxt])

    for start in edges:
        walk(start, [start])
    return found


if __name__ == "__main__":
    found = cycles(graph())
    for cycle in sorted(found):
        print(" <-> ".join(cycle))
    print(f"{len(found)} import cycle(s) among {len(graph())} modules")
    sys.exit(1 if found else 0)
