"""JSON bodies checked against the wire models of the installed Azure SDKs (azure-mgmt-compute and
azure-mgmt-network, generated from Microsoft's current TypeSpec and Swagger): every property name must be one
the model has, in the JSON type it declares, and a string enum's value one it knows (ARM's enums are open: an
unknown value is reported apart). Not a full schema check (no required, readOnly or format rules: oav does
those against the Compute Swagger), but what a hand-written fake or connector most often gets wrong: a misspelled
or misplaced property, a wrong type, a list for an object."""

from __future__ import annotations

import datetime
import enum
import re
import sys
import typing
from typing import Any

from azure.mgmt.compute import models as compute
from azure.mgmt.network import models as network

# (methods, path pattern, model, whether the body is a page of them)
RESPONSES = [
    ("PUT|GET", r"/virtualMachines/[^/]+$", compute.VirtualMachine, False),
    ("GET", r"/virtualMachines$", compute.VirtualMachine, True),
    ("GET", r"/instanceView$", compute.VirtualMachineInstanceView, False),
    ("GET", r"/usages$", compute.Usage, True),
    ("GET", r"/skus$", compute.ResourceSku, True),
    ("GET|PATCH", r"/disks/[^/]+$", compute.Disk, False),
    ("GET", r"/disks$", compute.Disk, True),
    ("PUT|GET", r"/networkInterfaces/[^/]+$", network.NetworkInterface, False),
    ("GET", r"/networkInterfaces$", network.NetworkInterface, True),
    ("PUT|GET", r"/publicIPAddresses/[^/]+$", network.PublicIPAddress, False),
    ("GET", r"/publicIPAddresses$", network.PublicIPAddress, True),
]
REQUESTS = [
    ("PUT", r"/virtualMachines/[^/]+$", compute.VirtualMachine),
    ("PATCH", r"/disks/[^/]+$", compute.DiskUpdate),
    ("PUT", r"/networkInterfaces/[^/]+$", network.NetworkInterface),
    ("PUT", r"/publicIPAddresses/[^/]+$", network.PublicIPAddress),
]
OPERATION_KEYS = {"id", "name", "status", "startTime", "endTime", "percentComplete", "error", "properties"}
ERROR_KEYS = {"code", "message", "target", "details", "additionalInfo", "innererror"}
_FIELDS: dict[type, dict[str, Any]] = {}


def fields(model: type) -> dict[str, Any]:
    """A model's REST property names -> their declared types."""
    if model in _FIELDS:
        return _FIELDS[model]
    try:
        model()  # the SDK's Model fills in its REST names on first use
    except Exception:  # noqa: BLE001 (some models need arguments: their names are there anyway)
        pass
    found: dict[str, Any] = {}
    for klass in reversed(model.__mro__):
        module = sys.modules[klass.__module__]
        package = sys.modules[klass.__module__.rsplit(".", 1)[0]]
        try:
            hints = typing.get_type_hints(klass, globalns=dict(vars(module), _models=package))
        except Exception:  # noqa: BLE001 (bases without resolvable hints)
            hints = {}
        for attribute, value in vars(klass).items():
            if type(value).__name__ != "_RestField":
                continue
            try:
                name = value._rest_name
            except ValueError:
                name = getattr(value, "_rest_name_input", None) or attribute
            found[name] = hints.get(attribute, Any)
    _FIELDS[model] = found
    return found


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and any(base.__name__ == "Model" for base in kind.__mro__[1:])


def check(value: Any, kind: Any, path: str, errors: list[str], notes: list[str]) -> None:
    """Errors (and notes, for unknown enum values) of ``value`` read as ``kind``."""
    if value is None:
        return
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        _union(value, kind, path, errors, notes)
    elif origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: an array expected, not {type(value).__name__}")
            return
        (item,) = typing.get_args(kind) or (Any,)
        for number, element in enumerate(value):
            check(element, item, f"{path}[{number}]", errors, notes)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: an object expected, not {type(value).__name__}")
            return
        inner = (typing.get_args(kind) or (str, Any))[1]
        for name, element in value.items():
            check(element, inner, f"{path}.{name}", errors, notes)
    elif _is_model(kind):
        _model(value, kind, path, errors, notes)
    else:
        _scalar(value, kind, path, errors, notes)


def _union(value: Any, kind: Any, path: str, errors: list[str], notes: list[str]) -> None:
    options = [a for a in typing.get_args(kind) if a is not type(None)]
    structured = [a for a in options if _is_model(a) or typing.get_origin(a) in (list, dict)]
    enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
    if len(structured) == 1 and not isinstance(value, str):
        check(value, structured[0], path, errors, notes)
    elif enums and isinstance(value, str):
        check(value, enums[0], path, errors, notes)
    elif options and not (str in options and isinstance(value, str)):
        check(value, options[0], path, errors, notes)


def _model(value: Any, kind: type, path: str, errors: list[str], notes: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: an object ({kind.__name__}) expected, not {type(value).__name__}")
        return
    known = fields(kind)
    for name, element in value.items():
        if name not in known:
            errors.append(f"{path}.{name}: not a property of {kind.__name__}")
        else:
            check(element, known[name], f"{path}.{name}", errors, notes)


def _scalar(value: Any, kind: Any, path: str, errors: list[str], notes: list[str]) -> None:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if not isinstance(value, str):
            errors.append(f"{path}: a string expected ({kind.__name__}), not {value!r}")
        elif value.lower() not in {member.value.lower() for member in kind}:
            notes.append(f"{path}: {value!r} is not one of the SDK's {kind.__name__} values")
    elif kind is bool and not isinstance(value, bool):
        errors.append(f"{path}: a boolean expected, not {value!r}")
    elif kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
        errors.append(f"{path}: a number expected, not {value!r}")
    elif kind is str and not isinstance(value, str):
        errors.append(f"{path}: a string expected, not {value!r}")
    elif kind is datetime.datetime:
        try:
            datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", str(value)))
        except ValueError:
            errors.append(f"{path}: {value!r} is not an ISO 8601 time")


def check_exchange(method: str, path: str, status: int, request: Any, response: Any) -> tuple[list[str], list[str]]:
    """The errors and notes of one recorded exchange: its request body and its response body."""
    errors: list[str] = []
    notes: list[str] = []
    method = method.upper()
    for methods, pattern, model in REQUESTS:
        if method in methods.split("|") and re.search(pattern, path) and isinstance(request, dict):
            check(request, model, "request", errors, notes)
    if response is None:
        return errors, notes
    if status >= 400:
        if set(response) != {"error"} or not set(response["error"]) <= ERROR_KEYS:
            errors.append(f"error body of another shape: {response}")
    elif "/operations/" in path:
        if not set(response) <= OPERATION_KEYS:
            errors.append(f"operation status with {sorted(set(response) - OPERATION_KEYS)}")
    else:
        _response(method, path, response, errors, notes)
    return errors, notes


def _response(method: str, path: str, response: Any, errors: list[str], notes: list[str]) -> None:
    for methods, pattern, model, paged in RESPONSES:
        if method in methods.split("|") and re.search(pattern, path):
            if not paged:
                check(response, model, "response", errors, notes)
                return
            if not set(response) <= {"value", "nextLink"}:
                errors.append(f"page with {sorted(response)}")
            for number, item in enumerate(response.get("value", [])):
                check(item, model, f"value[{number}]", errors, notes)
            return
    errors.append(f"no model for {method} {path}")
