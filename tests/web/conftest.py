"""Fixtures of the endpoint's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from webtest import Site, make_site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """The app over a real SQLite store, one space 'sp', listening on loopback."""
    return make_site(tmp_path)
