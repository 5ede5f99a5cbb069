"""The endpoint's OpenAPI document, served at ``/openapi.json`` and checked in as ``etc/openapi.json``.

Written by hand next to the routes it describes (a test compares the two and
runs schemathesis against the served application).
"""

from __future__ import annotations

from typing import Any

from vcycle import __version__

TEXT = {"text/plain": {"schema": {"type": "string"}}}
ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
SPACE = {"name": "space", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z0-9.-]+$"}}
MACHINE = {"name": "machine", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"}}
MACHINETYPE = {"name": "machinetype", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[a-z0-9-]+$"}}
KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
FILE = {"name": "file", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}}
REASONS = {
    400: "bad request", 401: "no credentials", 403: "credentials not valid here", 404: "not found",
    405: "method not allowed", 408: "body too slow", 410: "gone for good", 413: "too large", 422: "invalid body",
    429: "too many requests", 503: "unavailable now", 507: "no space left",
}


def _errors(statuses: tuple[int, ...], content: dict[str, Any]) -> dict[str, Any]:
    return {str(s): {"description": REASONS[s], "content": content} for s in statuses}


def _machine_get(kind: str, with_key: bool, old: bool) -> dict[str, Any]:
    what = f"one {kind} value" if with_key else f"the {kind} keys, one per line"
    return {"get": {
        "summary": f"{kind}: {what}" + (" (the old vcycle's path without a space)" if old else ""),
        "deprecated": old,
        "parameters": ([] if old else [SPACE]) + [MACHINE] + ([KEY] if with_key else []),
        "security": [{}, {"machineToken": []}],
        "responses": {"200": {"description": what, "content": TEXT}, **_errors((401, 403, 404), TEXT)},
    }}


def _joboutputs(old: bool) -> dict[str, Any]:
    return {"put": {
        "summary": "upload a joboutputs file (the heartbeat file, shutdown_message, logs)",
        "deprecated": old,
        "parameters": ([] if old else [SPACE]) + [MACHINE, FILE],
        "security": [{"machineToken": []}],
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
            "type": "string", "format": "binary"}}}},
        "responses": {"204": {"description": "kept"},
                      **_errors((400, 401, 403, 404, 405, 408, 413, 429, 503, 507), TEXT)},
    }}


def _heartbeat_list() -> dict[str, Any]:
    return {"get": {
        "summary": "running machines of a machinetype with a current heartbeat: 'UNIXTIME NAME ADDRESS' lines",
        "parameters": [SPACE, MACHINETYPE],
        "responses": {"200": {"description": "the list, newest first", "content": TEXT},
                      **_errors((404, 503), TEXT)},
    }}


def _operator(summary: str, schema: str, parameters: list[dict[str, Any]], errors: tuple[int, ...]) -> dict[str, Any]:
    return {"get": {
        "summary": summary, "parameters": parameters, "security": [{"operatorToken": []}],
        "responses": {"200": {"description": summary, "content": {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{schema}"}}}}, **_errors((401, 403, *errors, 503), ERROR_JSON)},
    }}


MANAGER = {"type": "object", "required": ["holder", "started", "spaces"], "properties": {
    "holder": {"type": "string"}, "started": {"type": "string"}, "spaces": {"type": "integer"}}}
LEASE = {"type": "object", "nullable": True, "description": "who holds the space, where managers share the store",
         "properties": {"holder": {"type": "string", "nullable": True}, "epoch": {"type": "integer"},
                        "since": {"type": "string"}, "expires_in": {"type": "number"}, "reason": {"type": "string"}}}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in ("machinefeatures", "jobfeatures"):
        paths[f"/machines/{{space}}/{{machine}}/{kind}"] = _machine_get(kind, False, False)
        paths[f"/machines/{{space}}/{{machine}}/{kind}/{{key}}"] = _machine_get(kind, True, False)
        paths[f"/machines/{{machine}}/{kind}/{{key}}"] = _machine_get(kind, True, True)
    paths["/machines/{space}/{machine}/joboutputs/{file}"] = _joboutputs(False)
    paths["/machines/{machine}/joboutputs/{file}"] = _joboutputs(True)
    paths["/heartbeatlists/{space}/{machinetype}"] = _heartbeat_list()
    paths["/spaces/{space}/heartbeatmachines/{machinetype}"] = {"get": {
        **_heartbeat_list()["get"], "deprecated": True}}
    paths["/api/v1/machines/{space}/{machine}/heartbeat"] = {"post": {
        "summary": "a heartbeat with what the machine is doing",
        "parameters": [SPACE, MACHINE], "security": [{"machineToken": []}],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Heartbeat"}}}},
        "responses": {"204": {"description": "received"},
                      **_errors((400, 401, 403, 404, 408, 413, 422, 429), ERROR_JSON)},
    }}
    paths["/api/v1/machines/{space}/{machine}/user-data"] = {"get": {
        "summary": "the machine's full user-data, for templates that fetch it at boot",
        "parameters": [SPACE, MACHINE], "security": [{"machineToken": []}],
        "responses": {"200": {"description": "user-data", "content": {"application/octet-stream": {"schema": {
            "type": "string", "format": "binary"}}}}, **_errors((401, 403, 404, 410, 429, 503), ERROR_JSON)},
    }}
    paths["/api/v1/machines/{space}/{machine}/history"] = _operator(
        "every state change of one machine", "History", [SPACE, MACHINE], (404,))
    paths["/api/v1/machines"] = _operator("machines, by space and state", "Machines", [
        {"name": "space", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "state", "in": "query", "required": False, "schema": {"type": "string"}},
    ], (400, 404))
    paths["/api/v1/spaces"] = _operator("the spaces", "Spaces", [], ())
    paths["/api/v1/status"] = _operator("what `vcycle status --json` prints", "Status", [], ())
    paths["/metrics"] = {"get": {
        "summary": "Prometheus metrics", "security": [{"operatorToken": []}],
        "responses": {"200": {"description": "metrics in the Prometheus text format", "content": TEXT},
                      **_errors((401, 403), ERROR_JSON)},
    }}
    paths["/openapi.json"] = {"get": {"summary": "this document", "responses": {"200": {
        "description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "vcycle endpoint", "version": __version__, "description": (
            "What machines call (Machine/Job Features, joboutputs, heartbeats, user-data) and what operators "
            "read (status, machines, metrics). Machines authenticate with their own token or with an X.509 "
            "client certificate whose DN equals the machinetype's https_x509dn.")},
        "paths": paths,
        "components": {"securitySchemes": {
            "machineToken": {"type": "http", "scheme": "bearer", "description": "the machine's own token"},
            "operatorToken": {"type": "http", "scheme": "bearer", "description": "[settings] operator_token"},
        }, "schemas": _schemas()},
    }


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": kind, "nullable": True}


def _schemas() -> dict[str, Any]:
    machine_fields = {k: _nullable("string") for k in (
        "state_since", "started_at", "stopped_at", "shutdown_at", "heartbeat_at", "shutdown_text", "cloud_id",
        "zone", "flavor", "interruption", "interrupted_at")}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Heartbeat": {"type": "object", "additionalProperties": False, "properties": {
            "load": {"type": "number", "minimum": 0}, "running_jobs": {"type": "integer", "minimum": 0},
            "text": {"type": "string", "maxLength": 1000}}},
        "Machine": {"type": "object", "required": ["space", "name", "machinetype", "state"], "properties": {
            "space": {"type": "string"}, "name": {"type": "string"}, "machinetype": {"type": "string"},
            "state": {"type": "string"}, "reason": {"type": "string"}, "processors": {"type": "integer"},
            "created_at": {"type": "string"}, "shutdown_code": _nullable("integer"), "manager": {"type": "string"},
            **machine_fields}},
        "Machines": {"type": "object", "required": ["machines"], "properties": {
            "machines": {"type": "array", "items": {"$ref": "#/components/schemas/Machine"}}}},
        "History": {"type": "object", "required": ["space", "machine", "history"], "properties": {
            "space": {"type": "string"}, "machine": {"type": "string"},
            "history": {"type": "array", "items": {"type": "object", "required": ["state", "at", "reason", "cause"],
                                                   "properties": {"state": {"type": "string"},
                                                                  "at": {"type": "string"},
                                                                  "reason": {"type": "string"},
                                                                  "cause": {"type": "string"}}}}}},
        "Spaces": {"type": "object", "required": ["spaces"], "properties": {
            "spaces": {"type": "array", "items": {"type": "object", "required": ["name"]}}}},
        "Status": {"type": "object", "required": ["manager", "time", "managers", "spaces"], "properties": {
            "manager": {"type": "string"}, "time": {"type": "string"},
            "managers": {"type": "array", "description": "the managers alive that share the store (none where one "
                         "manager has it alone)", "items": MANAGER},
            "spaces": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "lease": LEASE}}}}},
    }
