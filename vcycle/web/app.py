"""The ASGI application: routes, error answers, request counting and background upkeep.

``build(config, store)`` makes the shared Endpoint state; ``create_app``
turns it into a Starlette application. Every refusal is a 4xx (or 503/507)
with a reason: plain text on the machines' paths, ``{"error": ...}`` JSON on
the API. A bug answers 500 with no traceback, and is logged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vcycle.clock import utc_now
from vcycle.core import identity
from vcycle.core.model import MachineRecord
from vcycle.core.options import default_of
from vcycle.core.sections import Config, SpaceConfig
from vcycle.errors import JoboutputsError, Refused, StoreError
from vcycle.store import Store
from vcycle.store.joboutputs import joboutputs_of
from vcycle.store.status import unhealthy
from vcycle.userdata.render import render_user_data
from vcycle.userdata.sources import Fetcher
from vcycle.web import machine_routes as m
from vcycle.web import operator_routes as o
from vcycle.web import ui
from vcycle.web.beats import HeartbeatBuffer
from vcycle.web.directory import Directory
from vcycle.web.endpoint import Endpoint, UserDataRenderer, is_loopback
from vcycle.web.limits import RateLimiter
from vcycle.web.metrics import Metrics
from vcycle.web.openapi import document

log = logging.getLogger(__name__)
REFRESH_SECONDS = 2.0
CLEANUP_SECONDS = 600.0


def user_data_renderer(fetcher: Fetcher | None = None) -> UserDataRenderer:
    """Renders a live machine's user-data again, for the token it presents (only its hash is stored)."""

    def render(config: Config, record: MachineRecord, token: str | None) -> bytes:
        space = config.spaces[record.space]
        mt = space.machinetypes[record.machinetype]
        order = identity.order_for(record, mt, "fetched by the machine")
        data: bytes = render_user_data(space, mt, record.name, order, record.request_id, token,
                                       manager=config.settings.manager_name, fetcher=fetcher)
        return data

    return render


def build(config: Config, store: Store, *, clock: Callable[[], datetime] = utc_now,
          render: UserDataRenderer | None = None, listen_host: str | None = None) -> Endpoint:
    """The endpoint's shared state for ``config``; nothing is started yet."""
    settings = config.settings
    directory = Directory(store)
    joboutputs = joboutputs_of(settings, store)
    host = listen_host if listen_host is not None else (settings.https_listen or ("127.0.0.1", 0))[0]
    return Endpoint(config=config, store=store, directory=directory,
                    beats=HeartbeatBuffer(store, joboutputs, settings.heartbeat_flush_seconds),
                    joboutputs=joboutputs, limiter=RateLimiter(settings.machine_requests_per_minute),
                    metrics=Metrics(directory, clock), clock=clock, render=render,
                    operator_open=is_loopback(host))


class Upkeep:
    """Background work: refresh the machines, count new cycle reports, flush heartbeats, clean joboutputs."""

    def __init__(self, endpoint: Endpoint, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.endpoint = endpoint
        self.refresh_seconds = refresh_seconds
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.cleaned = 0.0

    def once(self) -> None:
        endpoint = self.endpoint
        endpoint.directory.refresh()
        try:
            apis = {name: space.api for name, space in endpoint.config.spaces.items()}
            endpoint.metrics.observe_reports(endpoint.store.last_reports(), apis)
            endpoint.metrics.observe_health(unhealthy(endpoint.config, endpoint.store))
        except StoreError as exc:
            log.warning("endpoint: cycle reports not read: %s", exc)
        now = time.time()
        if now - self.cleaned > CLEANUP_SECONDS:
            self.cleaned = now
            spaces = endpoint.config.spaces
            removed = endpoint.joboutputs.cleanup(
                endpoint.directory.live(),
                lambda space: 3600.0 * (spaces[space].cleanup_hours if space in spaces
                                        else default_of(SpaceConfig, "cleanup_hours")), now)
            if removed:
                log.info("endpoint: removed the joboutputs of %d machine(s) gone for longer than cleanup_hours",
                         removed)

    def start(self) -> None:
        self.once()
        self.endpoint.beats.start()
        self.thread = threading.Thread(target=self._run, name="vcycle-endpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(self.refresh_seconds):
            try:
                self.once()
            except Exception:  # the upkeep boundary: a bug here must not stop the endpoint
                log.exception("endpoint: upkeep failed; trying again")

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.endpoint.beats.stop()


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/openapi")) or request.url.path == "/metrics"


def _answer(request: Request, status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    if _is_api(request):
        return JSONResponse({"error": reason}, status_code=status, headers=headers)
    return PlainTextResponse(reason + "\n", status_code=status, headers=headers)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return _answer(request, exc.status, exc.reason, exc.headers)


async def _joboutputs_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JoboutputsError)
    return _answer(request, exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = {404: "no such path", 405: "method not allowed here"}.get(exc.status_code, str(exc.detail))
    return _answer(request, exc.status_code, reason, dict(exc.headers or {}))


async def _bug(request: Request, exc: Exception) -> Response:
    log.error("endpoint: %s %s failed: %r", request.method, request.url.path, exc, exc_info=exc)
    return _answer(request, 500, "internal error; the server's log says more")


class CountRequests:
    """ASGI middleware: answers counted by route family and status."""

    def __init__(self, app: ASGIApp, endpoint: Endpoint) -> None:
        self.app = app
        self.counter = endpoint.metrics.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/", 3)
        route = parts[1] if parts[1] != "api" else "api/" + (parts[2] if len(parts) > 2 else "")
        route = route if route in _ROUTES else "other"

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counter.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting)


_ROUTES = {"machines", "heartbeatlists", "spaces", "metrics", "openapi.json", "api/v1", "ui", ""}


def create_app(endpoint: Endpoint, *, upkeep: bool = True) -> Starlette:
    """The Starlette application over ``endpoint``; with ``upkeep``, its background work runs with it."""
    routes = [
        Route("/machines/{path:path}", m.machine_get, methods=["GET"]),
        Route("/machines/{path:path}", m.machine_put, methods=["PUT"]),
        Route("/heartbeatlists/{space}/{machinetype}", m.heartbeat_list, methods=["GET"]),
        Route("/spaces/{space}/heartbeatmachines/{machinetype}", m.heartbeat_list, methods=["GET"]),
        Route("/api/v1/machines/{space}/{machine}/heartbeat", m.api_heartbeat, methods=["POST"]),
        Route("/api/v1/machines/{space}/{machine}/user-data", m.api_user_data, methods=["GET"]),
        Route("/api/v1/machines/{space}/{machine}/history", o.api_history, methods=["GET"]),
        Route("/api/v1/machines", o.api_machines, methods=["GET"]),
        Route("/api/v1/spaces", o.api_spaces, methods=["GET"]),
        Route("/api/v1/status", o.api_status, methods=["GET"]),
        Route("/metrics", o.metrics, methods=["GET"]),
        Route("/openapi.json", lambda request: JSONResponse(document()), methods=["GET"]),
        *ui.routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        keeper = Upkeep(endpoint) if upkeep else None
        if keeper is not None:
            keeper.start()
        try:
            yield
        finally:
            if keeper is not None:
                keeper.stop()

    handlers: dict[Any, Any] = {Refused: _refused, JoboutputsError: _joboutputs_error,
                                     HTTPException: _http_error, Exception: _bug}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.endpoint = endpoint
    app.add_middleware(CountRequests, endpoint=endpoint)
    return app
