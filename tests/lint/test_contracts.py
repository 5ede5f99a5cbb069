"""The import contracts of ``make lint`` (pyproject.toml, [tool.importlinter]) can fail: each is run by the real
import-linter on a copy of the tree with one violation planted, and reports it broken; the copy untouched keeps
them all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

# contract id -> (module to change, the import planted in it)
PLANTED = {
    "layers": ("vcycle/store/sql.py", "import vcycle.loop.cycle"),
    "pure-core": ("vcycle/core/rules.py", "import time"),
    "web": ("vcycle/web/app.py", "import vcycle.connectors.base"),
    "connectors": ("vcycle/connectors/ec2.py", "import vcycle.connectors.local"),
    "connectors-below": ("vcycle/connectors/local.py", "import vcycle.store"),
    "demand": ("vcycle/demand/htcondor.py", "import vcycle.demand.dirac"),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package as installed (the links vcycle/connectors and vcycle/userdata followed)."""
    copy = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "vcycle", copy / "vcycle", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def lint(tree: Path, contract: str | None = None) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.fail(f"{LINT} is not installed (make test installs the test extras)")
    chosen = ["--contract", contract] if contract else []
    return subprocess.run([str(LINT), "--no-cache", *chosen], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tree)})


def test_the_untouched_copy_keeps_every_contract(tree: Path) -> None:
    done = lint(tree)
    assert done.returncode == 0, done.stdout
    assert f"Contracts: {len(PLANTED)} kept, 0 broken." in done.stdout


@pytest.mark.parametrize("contract", sorted(PLANTED))
def test_a_planted_violation_breaks_its_contract(tree: Path, contract: str) -> None:
    module, line = PLANTED[contract]
    path = tree / module
    original = path.read_text()
    path.write_text(original.replace("from __future__ import annotations\n",
                                     f"from __future__ import annotations\n\n{line}  # planted\n", 1))
    try:
        done = lint(tree, contract)
    finally:
        path.write_text(original)
    assert done.returncode == 1 and "BROKEN" in done.stdout, done.stdout
    planted = line.split()[1]
    assert planted in done.stdout, done.stdout  # the report names the import that breaks it


def test_mypy_sees_into_connectors_and_the_renderer(tmp_path: Path) -> None:
    """vcycle.connectors and vcycle.userdata resolve to their code (no ignore_missing_imports for our own
    packages): a wrong call into a connector or into the renderer fails mypy --strict, as ``make lint`` runs it."""
    from mypy import api

    probe = tmp_path / "probe.py"
    probe.write_text("from vcycle.connectors.base import Connector\n"
                     "from vcycle.userdata.render import render_user_data\n\n\n"
                     "def wrong(connector: Connector) -> None:\n"
                     "    connector.create_machine()\n"
                     "    render_user_data(1, 2)\n")
    out, _, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
                              str(ROOT / ".mypy_cache"), str(probe)])
    assert status == 1, out
    assert 'Missing positional argument "spec" in call to "create_machine" of "Connector"' in out
    assert 'Argument 1 to "render_user_data" has incompatible type "int"; expected "SpaceConfig"' in out
