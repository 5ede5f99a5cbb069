"""The pure core imports no clock, randomness, I/O or SDK, and never asks for the time.

The pure set is every module of vcycle/core/, found in the tree (a new module there is checked without
anyone listing it). An import is read as the module it reaches: ``from vcycle import store`` is an import of
``vcycle.store``, so a pure module cannot reach the rest of vcycle through the package's name. The last tests
plant violations and show that each is caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "vcycle"
CORE = ROOT / "core"
PURE = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")
# The standard library a pure module may use: values, text and arithmetic, nothing that reaches out.
STDLIB = {"__future__", "base64", "bisect", "collections", "collections.abc", "copy", "dataclasses", "datetime",
          "difflib", "enum", "functools", "hashlib", "heapq", "itertools", "math", "operator", "re", "string",
          "types", "typing"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "random", "uuid4", "urandom",
                   "token_bytes", "open", "getenv", "system"}


def _is_module(name: str) -> bool:
    """Whether ``name`` (vcycle.x.y) is a module or package of the tree."""
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(tree: ast.Module) -> list[str]:
    """The modules a module imports at run time (``if TYPE_CHECKING:`` blocks left out), each as the module it
    reaches: ``from a import b`` is ``a.b`` when that is a module, else ``a``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append(full if base.startswith("vcycle") and _is_module(full) else base)
    return found


def impure_imports(source: str) -> list[str]:
    allowed = STDLIB | {"vcycle.errors"} | {f"vcycle.core.{m}" for m in PURE} | {"vcycle.core"}
    return [name for name in imports_of(ast.parse(source)) if name not in allowed]


def forbidden_calls(source: str) -> set[str]:
    calls = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
             for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)}
    return FORBIDDEN_CALLS & calls


def test_the_core_is_found_in_the_tree() -> None:
    assert {"model", "states", "rules", "sync", "planner", "retire", "mjf", "identity", "options", "sections",
            "timeouts"} <= set(PURE)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_only_pure_things(module: str) -> None:
    bad = impure_imports((CORE / f"{module}.py").read_text())
    assert bad == [], f"vcycle/core/{module}.py imports {bad}"


@pytest.mark.parametrize("module", PURE)
def test_pure_module_never_reads_the_clock_or_chance(module: str) -> None:
    bad = forbidden_calls((CORE / f"{module}.py").read_text())
    assert not bad, f"vcycle/core/{module}.py calls {bad}"


# --- planted violations: the checks can fail ---------------------------------------------------------------

@pytest.mark.parametrize(("source", "caught"), [
    ("import time\n", ["time"]),
    ("from vcycle import store, web\n", ["vcycle.store", "vcycle.web"]),
    ("import vcycle.loop.cycle\n", ["vcycle.loop.cycle"]),
    ("from vcycle.loop import executor\n", ["vcycle.loop.executor"]),
    ("from vcycle import __version__\n", ["vcycle"]),
    ("import sqlalchemy\nfrom os import path\n", ["sqlalchemy", "os"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os\nimport secrets\n", ["secrets"]),
])
def test_a_planted_impure_import_is_caught(source: str, caught: list[str]) -> None:
    assert impure_imports(source) == caught


def test_pure_imports_pass() -> None:
    assert impure_imports("from vcycle.core import rules\nfrom vcycle.core.model import Plan\n"
                          "from vcycle.errors import StaleState\nimport dataclasses\n") == []


def test_a_planted_clock_or_chance_call_is_caught() -> None:
    assert forbidden_calls("import datetime\nx = datetime.datetime.now()\n") == {"now"}
    assert forbidden_calls("y = secrets.token_bytes(8)\nz = open('f')\n") == {"token_bytes", "open"}
