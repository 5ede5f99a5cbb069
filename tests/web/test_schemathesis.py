"""Schemathesis against the served OpenAPI document: no 5xx, no answer that breaks the document.

The application is the real one over a real SQLite store with live machines;
schemathesis generates requests, valid and not, from ``/openapi.json`` itself,
for every operation the document lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from webtest import make_site

from vcycle.core.states import MachineState
from vcycle.web.app import create_app
from vcycle.web.openapi import document

OPERATIONS = [(path, method) for path, item in document()["paths"].items() for method in item]


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_no_server_errors_and_answers_match_the_document(tmp_path: Path, path: str, method: str) -> None:
    site = make_site(tmp_path)
    site.machine("m1")
    site.machine("m2", state=MachineState.STARTING)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(site.endpoint, upkeep=False))
    operation = schema[path][method]

    @given(operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate()

    run()
