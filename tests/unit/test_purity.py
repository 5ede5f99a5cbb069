"""The pure core imports no clock, randomness, I/O or SDK, and never asks for the time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PURE = ("model", "states", "rules", "sync", "planner", "mjf", "retire")
ALLOWED = {
    "__future__", "dataclasses", "enum", "typing", "collections.abc", "datetime", "math",
    "vcycle", "vcycle.model", "vcycle.states", "vcycle.rules", "vcycle.errors", "vcycle.retire",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "random", "uuid4", "urandom", "open"}
SOURCE = Path(__file__).resolve().parents[2] / "vcycle"


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Imports outside ``if TYPE_CHECKING:`` blocks."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(node.module or "")
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_only_pure_things(module: str) -> None:
    tree = ast.parse((SOURCE / f"{module}.py").read_text())
    bad = [name for name in _runtime_imports(tree) if name not in ALLOWED]
    assert bad == [], f"vcycle/{module}.py imports {bad}"


@pytest.mark.parametrize("module", PURE)
def test_pure_module_never_reads_the_clock_or_chance(module: str) -> None:
    tree = ast.parse((SOURCE / f"{module}.py").read_text())
    calls = [node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
             for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert not FORBIDDEN_CALLS & set(calls), f"vcycle/{module}.py calls {FORBIDDEN_CALLS & set(calls)}"


def test_the_checker_catches_a_clock_import() -> None:
    tree = ast.parse("import time\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os\n")
    assert _runtime_imports(tree) == ["time", "typing"]
