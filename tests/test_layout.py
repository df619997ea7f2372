"""The house's shape: no import cycle among advbench's modules, and no function in
harness/ or estimators/ longer than a screen (80 lines)."""

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_cycles_script():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "benchmarks" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle():
    script = _import_cycles_script()
    edges = script.graph()
    assert "advbench.harness.loop" in edges and "advbench.harness.config" in edges["advbench.harness.loop"]
    assert "advbench.harness.losses.base" in edges["advbench.harness.losses.dppo"]  # the rooms count too
    assert script.cycles(edges) == set()
    assert script.cycles({"a": {"b"}, "b": {"a"}}) == {("a", "b")}  # the finder finds one


def test_no_function_over_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for folder in ("harness", "estimators")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80
    ]
    assert long == []
