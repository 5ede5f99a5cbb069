"""What operators read: the same data as ``vcycle status`` and ``vcycle machines``, as JSON; and metrics."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vcycle.core.model import MachineRecord
from vcycle.core.states import MachineState
from vcycle.errors import Refused, StoreError
from vcycle.store import status as status_module
from vcycle.web.endpoint import Endpoint, authenticate_operator
from vcycle.web.machine_routes import endpoint_of

STATES = sorted(s.value for s in MachineState)


def _operator(request: Request) -> Endpoint:
    endpoint = endpoint_of(request)
    authenticate_operator(request, endpoint)
    return endpoint


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def machine_view(record: MachineRecord) -> dict[str, Any]:
    """One machine as the API shows it (nothing secret: no token hash)."""
    return {
        "space": record.space, "name": record.name, "machinetype": record.machinetype, "state": record.state.value,
        "state_since": _iso(record.state_since), "reason": record.reason,
        "processors": record.processors, "created_at": _iso(record.created_at), "started_at": _iso(record.started_at),
        "stopped_at": _iso(record.stopped_at), "shutdown_at": _iso(record.shutdown_at),
        "heartbeat_at": _iso(record.heartbeat_at), "shutdown_code": record.shutdown_code,
        "shutdown_text": record.shutdown_text, "cloud_id": record.cloud_id, "zone": record.zone,
        "flavor": record.flavor, "manager": record.manager, "interruption": record.interruption,
        "interrupted_at": _iso(record.interrupted_at),
    }


async def _read(call: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(call, *args)
    except StoreError as exc:
        raise Refused(503, f"the state store cannot be read now: {exc}") from exc


async def api_status(request: Request) -> Response:
    endpoint = _operator(request)
    return JSONResponse(await _read(status_module.collect, endpoint.config, endpoint.store, endpoint.clock()))


async def api_spaces(request: Request) -> Response:
    endpoint = _operator(request)
    found = await _read(status_module.collect, endpoint.config, endpoint.store, endpoint.clock())
    spaces = [{"name": name, **{k: v for k, v in space.items() if k != "last_cycle"},
               "last_cycle_ok": space["last_cycle"]["ok"] if space["last_cycle"] else None}
              for name, space in found["spaces"].items()]
    return JSONResponse({"spaces": spaces})


async def api_machines(request: Request) -> Response:
    endpoint = _operator(request)
    space = request.query_params.get("space")
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        raise Refused(400, f"state must be one of {', '.join(STATES)}")
    known = await _read(lambda: list(endpoint.store.spaces()))
    if space is not None and space not in known:
        raise Refused(404, f"no space {space!r}")
    records: list[MachineRecord] = []
    for name in [space] if space is not None else known:
        records.extend(await _read(endpoint.store.records, name))
    views = [machine_view(r) for r in records if state is None or r.state.value == state]
    return JSONResponse({"machines": views})


async def api_history(request: Request) -> Response:
    endpoint = _operator(request)
    space, name = request.path_params["space"], request.path_params["machine"]
    history = await _read(endpoint.store.history, space, name)
    if not history:
        raise Refused(404, f"no machine {space}/{name}")
    return JSONResponse({"space": space, "machine": name,
                         "history": [{"state": h.state.value, "at": h.at.isoformat(), "reason": h.reason,
                                      "cause": h.cause} for h in history]})


async def metrics(request: Request) -> Response:
    endpoint = _operator(request)
    endpoint.metrics.pending.set(endpoint.beats.pending())
    return Response(endpoint.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
