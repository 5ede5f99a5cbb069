"""What machines call: Machine/Job Features, joboutputs, heartbeats, heartbeat lists, user-data.

The old vcycle's paths keep working: ``/machines/NAME/...`` (no space; the
name is unique) next to ``/machines/SPACE/NAME/...``, and
``/spaces/SPACE/heartbeatmachines/MACHINETYPE`` next to
``/heartbeatlists/SPACE/MACHINETYPE``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from vcycle.core import identity, interruptions
from vcycle.core.model import Heartbeat, MachineRecord
from vcycle.core.states import MachineState
from vcycle.errors import JoboutputsError, Refused, RenderError, StoreError
from vcycle.store.joboutputs import check_name
from vcycle.store.pilots import PilotBook
from vcycle.web.endpoint import Endpoint, authenticate_machine, rate_limit

log = logging.getLogger(__name__)
KINDS = identity.FEATURES  # the directories a machine's URLs name (identity.machine_urls)
BODY_SECONDS = 30.0  # a client slower than this with its body is cut off
HEARTBEAT_BODY_BYTES = 4096
SHUTDOWN_MESSAGE = "shutdown_message"
DRAIN_HEADER = "Vcycle-Drain"
INTERRUPTION = "interruption"  # joboutputs/interruption: the cloud's notice (core/interruptions.py)


def endpoint_of(request: Request) -> Endpoint:
    found: Endpoint = request.app.state.endpoint
    return found


async def find(endpoint: Endpoint, name: str, space: str | None) -> MachineRecord | None:
    """A live machine: from memory, or else (just created) from the store."""
    directory = endpoint.directory
    found = directory.named(name) if space is None else directory.get(space, name)
    if found is None:
        found = await run_in_threadpool(directory.lookup, name, space, endpoint.monotonic())
    return found


async def resolve(endpoint: Endpoint, path: str) -> tuple[MachineRecord, str, str | None]:
    """``SPACE/NAME/KIND[/KEY]`` or the old ``NAME/KIND[/KEY]`` -> (record, kind, key)."""
    parts = path.split("/")
    candidates = []
    if len(parts) >= 3 and parts[2] in KINDS:
        candidates.append((await find(endpoint, parts[1], parts[0]), parts[2], parts[3:], f"{parts[0]}/{parts[1]}"))
    if len(parts) >= 2 and parts[1] in KINDS:
        candidates.append((await find(endpoint, parts[0], None), parts[1], parts[2:], parts[0]))
    if not candidates:
        raise Refused(404, "expected /machines/SPACE/MACHINE/{machinefeatures,jobfeatures,joboutputs}[/NAME]")
    for record, kind, rest, _ in candidates:
        if record is not None:
            if len(rest) > 1:
                raise Refused(404, f"no such path under {kind}")
            key = rest[0] if rest and rest[0] else None
            return record, kind, key
    raise Refused(404, f"no live machine {candidates[0][3]}")


async def machine_get(request: Request) -> Response:
    endpoint = endpoint_of(request)
    record, kind, key = await resolve(endpoint, request.path_params["path"])
    authenticate_machine(request, endpoint, record, required=False)
    if kind == "joboutputs":
        raise Refused(405, "joboutputs are written with PUT, not read", {"Allow": "PUT"})
    features = json.loads(record.features or "{}").get(kind, {})
    if key is None:
        return PlainTextResponse("".join(f"{k}\n" for k in sorted(features)))
    if key not in features:
        raise Refused(404, f"no {kind} key {key!r} for {record.name}")
    return PlainTextResponse(f"{features[key]}\n")


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes and 408 if it comes too slowly."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise Refused(413, f"{what} is {declared} bytes; at most {limit} are accepted")

    async def gather() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"{what} is over {limit} bytes; nothing was kept")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(gather(), BODY_SECONDS)
    except TimeoutError:
        raise Refused(408, f"{what} did not arrive within {BODY_SECONDS:.0f}s; nothing was kept") from None
    except ClientDisconnect:
        raise Refused(400, f"the client went away while sending {what}; nothing was kept") from None


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def machine_put(request: Request) -> Response:
    endpoint = endpoint_of(request)
    record, kind, name = await resolve(endpoint, request.path_params["path"])
    if kind != "joboutputs" or name is None:
        raise Refused(405, "only joboutputs/NAME can be written", {"Allow": "GET"})
    authenticate_machine(request, endpoint, record, required=True)
    rate_limit(endpoint, record)
    check_name(name)
    if name == INTERRUPTION:
        return await _interruption(request, endpoint, record)
    data = await read_body(request, endpoint.joboutputs.max_file_bytes, name)
    now = endpoint.clock()
    mt = endpoint.machinetype(record)
    if mt is not None and name == mt.heartbeat_file:
        endpoint.beats.add(record.space, Heartbeat(record.name, at=now, address=_address(request)), (name, data))
        endpoint.metrics.heartbeats.inc()
        return Response(status_code=204, headers=drain_answer(record))
    await run_in_threadpool(endpoint.joboutputs.write, record.space, record.name, name, data)  # errors: 4xx/5xx
    if name == SHUTDOWN_MESSAGE:
        text = data.decode("utf-8", "replace").strip().splitlines()
        message = (text[0] if text else "")[:1000]
        beat = Heartbeat(record.name, shutdown_message=message, shutdown_message_at=now, address=_address(request))
        try:  # at once, not batched: the machine stops right after, and sync must not see it stop without it
            await run_in_threadpool(endpoint.store.put_heartbeats, [(record.space, beat)])
        except StoreError:
            endpoint.beats.add(record.space, beat)
    return Response(status_code=204)


async def _interruption(request: Request, endpoint: Endpoint, record: MachineRecord) -> Response:
    """Keep the notice at once (not batched: the machine has two minutes at most) and wake the daemon."""
    data = await read_body(request, interruptions.NOTICE_BYTES, "the interruption notice")
    try:
        notice = interruptions.parse(json.loads(data or b"null"))
    except ValueError as exc:  # not JSON, or not a notice (BadNotice)
        raise Refused(422, f"not an interruption notice: {exc}") from None
    now = endpoint.clock()
    beat = Heartbeat(record.name, interruption=notice.describe(), interruption_at=now, address=_address(request))
    try:
        await run_in_threadpool(endpoint.store.put_heartbeats, [(record.space, beat)])
    except StoreError:
        endpoint.beats.add(record.space, beat)  # the flusher keeps trying
    try:
        await run_in_threadpool(endpoint.joboutputs.write, record.space, record.name, INTERRUPTION, data)
    except JoboutputsError as exc:  # the notice is kept in the store; only its copy among the joboutputs is lost
        log.warning("machine=%s interruption notice not kept among its joboutputs: %s", record.name, exc)
    endpoint.metrics.interruptions.labels(record.space, notice.kind).inc()
    log.warning("space=%s machinetype=%s machine=%s reported %s", record.space, record.machinetype, record.name,
                notice.describe())
    if endpoint.wake is not None:
        endpoint.wake()
    return Response(status_code=204)


def _heartbeat_detail(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data or b"{}")
    except ValueError as exc:
        raise Refused(400, f"the heartbeat body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Refused(422, "the heartbeat body must be a JSON object")
    unknown = set(body) - {"load", "running_jobs", "text"}
    if unknown:
        raise Refused(422, f"unknown heartbeat field(s): {', '.join(sorted(unknown))}")
    load, jobs, text = body.get("load"), body.get("running_jobs"), body.get("text")
    if load is not None and (isinstance(load, bool) or not isinstance(load, int | float) or load < 0):
        raise Refused(422, "load must be a number >= 0")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0):
        raise Refused(422, "running_jobs must be an integer >= 0")
    if text is not None and (not isinstance(text, str) or len(text) > 1000):
        raise Refused(422, "text must be a string of at most 1000 characters")
    return {k: v for k, v in body.items() if v is not None}


async def _api_record(request: Request, endpoint: Endpoint) -> MachineRecord:
    space, name = request.path_params["space"], request.path_params["machine"]
    record = await find(endpoint, name, space)
    if record is None:
        raise Refused(404, f"no live machine {space}/{name}")
    return record


async def api_heartbeat(request: Request) -> Response:
    endpoint = endpoint_of(request)
    record = await _api_record(request, endpoint)
    authenticate_machine(request, endpoint, record, required=True)
    rate_limit(endpoint, record)
    detail = _heartbeat_detail(await read_body(request, HEARTBEAT_BODY_BYTES, "the heartbeat body"))
    beat = Heartbeat(record.name, at=endpoint.clock(), address=_address(request),
                     detail=json.dumps(detail, sort_keys=True) if detail else None)
    endpoint.beats.add(record.space, beat)
    endpoint.metrics.heartbeats.inc()
    return Response(status_code=204, headers=drain_answer(record))


def drain_answer(record: MachineRecord) -> dict[str, str]:
    """A heartbeat's answer to a DRAINING machine: ``Vcycle-Drain: REASON``, for its pilot to take no more work
    and end (the shipped templates write it to VCYCLE_DRAIN_FILE and run drain_command); nothing otherwise."""
    if record.state is not MachineState.DRAINING:
        return {}
    reason = "".join(c if " " <= c <= "~" else " " for c in record.reason)[:300].strip()
    return {DRAIN_HEADER: reason or "draining"}


async def api_user_data(request: Request) -> Response:
    endpoint = endpoint_of(request)
    record = await _api_record(request, endpoint)
    how = authenticate_machine(request, endpoint, record, required=True)
    rate_limit(endpoint, record)
    if endpoint.render is None or endpoint.machinetype(record) is None:
        raise Refused(404, f"no user-data for {record.name}: its machinetype is not configured here")
    ran = await run_in_threadpool(PilotBook(endpoint.store).states, record.space, [record.name])
    if record.name in ran:
        raise Refused(410, f"no user-data for {record.name}: it ran the pilot wrapper a pilot factory (DIRAC's "
                           "SiteDirector) handed in, which was given to the cloud once and not kept")
    token = request.headers["authorization"].partition(" ")[2].strip() if how == "token" else None
    try:
        data = await run_in_threadpool(endpoint.render, endpoint.config, record, token)
    except (RenderError, OSError) as exc:
        raise Refused(503, f"user-data of {record.name} cannot be rendered now: {exc}") from exc
    return Response(data, media_type="application/octet-stream")


async def heartbeat_list(request: Request) -> Response:
    """Machines of a machinetype with a current heartbeat: ``UNIXTIME NAME ADDRESS`` lines, newest first."""
    endpoint = endpoint_of(request)
    space_name, mt_name = request.path_params["space"], request.path_params["machinetype"]
    space = endpoint.config.spaces.get(space_name)
    mt = space.machinetypes.get(mt_name) if space else None
    if mt is None:
        raise Refused(404, f"no machinetype {space_name}/{mt_name}")
    try:
        beats = await run_in_threadpool(endpoint.store.heartbeats, space_name)
    except StoreError as exc:
        raise Refused(503, f"heartbeats cannot be read now: {exc}") from exc
    now = endpoint.clock()
    lines = []
    for record in endpoint.directory.records():
        if record.space != space_name or record.machinetype != mt_name or record.state is not MachineState.RUNNING:
            continue
        beat = beats.get(record.name)
        at = max((t for t in (record.heartbeat_at, beat.at if beat else None) if t is not None), default=None)
        if at is None or (mt.heartbeat_seconds and now - at > timedelta(seconds=mt.heartbeat_seconds)):
            continue
        lines.append((int(at.timestamp()), record.name, (beat.address if beat else None) or "-"))
    lines.sort(reverse=True)
    return PlainTextResponse("".join(f"{t} {n} {a}\n" for t, n, a in lines))
