"""Compute Engine wire bodies validated against the Compute v1 discovery document (the one
google-api-python-client ships): each exchange's method found by the document's own paths and HTTP verbs, its
request and response bodies read against the method's schemas (properties known, JSON types, 64-bit integers
as strings as Google sends them, enums), its query parameters against the method's, and error bodies in
Google's shape."""

from __future__ import annotations

import re
from typing import Any


def methods(document: dict[str, Any]) -> list[tuple[str, re.Pattern[str], dict[str, Any]]]:
    found = []
    for resource in document["resources"].values():
        for method in resource.get("methods", {}).values():
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", method["path"])
            found.append((method["httpMethod"], re.compile(f"/compute/v1/{pattern}"), method))
    return found


def validate(value: Any, schema: dict[str, Any], schemas: dict[str, Any], path: str, errors: list[str]) -> None:
    """The errors of ``value`` read as ``schema`` (a discovery-document schema or a reference to one)."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        _object(value, schema, schemas, path, errors)
    elif kind == "array":
        if not isinstance(value, list):
            errors.append(f"{path}: an array expected, not {value!r:.80}")
            return
        for number, item in enumerate(value):
            validate(item, schema["items"], schemas, f"{path}[{number}]", errors)
    elif kind == "string":
        _string(value, schema, path, errors)
    elif kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        errors.append(f"{path}: an integer expected, not {value!r}")
    elif kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        errors.append(f"{path}: a number expected, not {value!r}")
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{path}: a boolean expected, not {value!r}")


def _object(value: Any, schema: dict[str, Any], schemas: dict[str, Any], path: str, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: an object expected, not {value!r:.80}")
        return
    properties = schema.get("properties", {})
    for name, item in value.items():
        if name in properties:
            validate(item, properties[name], schemas, f"{path}.{name}", errors)
        elif "additionalProperties" in schema:
            validate(item, schema["additionalProperties"], schemas, f"{path}.{name}", errors)
        else:
            errors.append(f"{path}.{name}: not a property")


def _string(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if not isinstance(value, str):
        errors.append(f"{path}: a string expected{' (' + schema['format'] + ')' if 'format' in schema else ''}, "
                      f"not {value!r}")
    elif schema.get("format") in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
        errors.append(f"{path}: {value!r} is not an {schema['format']}")
    elif "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum'][:8]}")


def check_exchanges(exchanges: list[dict[str, Any]], document: dict[str, Any]) -> tuple[int, list[str]]:
    """How many exchanges were checked, and every problem found."""
    table = methods(document)
    checked, problems = 0, []
    for exchange in exchanges:
        matches = [m for verb, pattern, m in table if verb == exchange["method"] and pattern.fullmatch(
            exchange["path"])]
        if not matches:
            problems.append(f"no discovery method for {exchange['method']} {exchange['path']}")
            continue
        method = min(matches, key=lambda m: len(m["path"]))
        errors = _errors(exchange, method, document)
        problems += [f"{method['id']} {exchange['method']} {exchange['path']}: {e}" for e in errors]
        checked += 1
    return checked, problems


def _errors(exchange: dict[str, Any], method: dict[str, Any], document: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    if exchange["request"] is not None:
        validate(exchange["request"], method["request"], document["schemas"], "request", errors)
    if exchange["status"] < 300 and "response" in method:
        validate(exchange["response"], method["response"], document["schemas"], "response", errors)
    elif exchange["status"] >= 300:
        error = exchange["response"].get("error", {})
        if set(exchange["response"]) != {"error"} or not {"code", "message", "errors"} <= set(error):
            errors.append(f"an error of another shape: {exchange['response']}")
    for parameter in exchange["query"]:
        if parameter not in method.get("parameters", {}) and parameter not in document["parameters"]:
            errors.append(f"query parameter {parameter} is not one of {method['id']}'s")
    return errors
