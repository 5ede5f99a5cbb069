"""The operator's status page: ``/`` and ``/ui/...``, HTML rendered on the server with jinja2.

It shows what ``vcycle status`` shows, with plots from the time series, a
paged machines table and a page per machine. It needs the operator API's
authentication: the operator token (as a bearer header, or typed once into
the login form, which sets an HttpOnly, SameSite=Strict session cookie that
carries an HMAC of the token, never the token), or nothing when no token is
configured and the endpoint listens on loopback alone.

Each page holds a ``#live`` part that ``static/ui.js`` fetches again
(``?fragment=1``) every cycle and swaps in, so the page updates itself
without a reload. Every style, script and plot comes from this package:
the page works with no network, under a Content-Security-Policy that allows
nothing from elsewhere and no inline script or style.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from vcycle.errors import Refused, StoreError
from vcycle.store.browse import Browse
from vcycle.store.joboutputs import check_name
from vcycle.web import pages
from vcycle.web.endpoint import Endpoint, bearer
from vcycle.web.machine_routes import endpoint_of
from vcycle.web.operator_routes import STATES
from vcycle.web.pages import WINDOWS

SESSION_COOKIE = "vcycle_session"
SESSION_SECONDS = 12 * 3600
PAGE_SIZE = 50
MAX_FORM_BYTES = 4096
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("vcycle.web", "templates"),
                               autoescape=jinja2.select_autoescape(("html",)), undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)


def when(value: datetime | str | None) -> str:
    """A time as the page shows it: 2026-12-02 14:03:07 UTC; '' for none."""
    if value is None:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.filters.update(when=when, ago=pages.ago)


def session_value(token: str, issued: int) -> str:
    """The cookie for a login at ``issued`` (Unix time): the time and an HMAC of it keyed by the token."""
    mac = hmac.new(token.encode(), f"vcycle status page {issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def session_valid(cookie: str | None, token: str, now: float) -> bool:
    issued, _, _ = (cookie or "").partition(".")
    if not issued.isdigit() or not 0 <= now - int(issued) <= SESSION_SECONDS:
        return False
    return hmac.compare_digest(session_value(token, int(issued)), cookie or "")


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


def _gate(request: Request, endpoint: Endpoint) -> Response | None:
    """None when the caller may see the page; else the answer: the login form (401) or a refusal (403)."""
    wanted = endpoint.config.settings.operator_token
    try:
        token = bearer(request)
    except Refused as refused:
        return _html(render("refused.html", reason=refused.reason), refused.status)
    if wanted is None:
        if endpoint.operator_open and token is None:
            return None
        return _html(render("refused.html", reason="the status page needs [settings] operator_token when the "
                            "endpoint listens beyond loopback" if not endpoint.operator_open else
                            "no operator token is configured; send none on this loopback-only endpoint"), 403)
    if token is not None:
        if hmac.compare_digest(token.encode(), wanted.encode()):
            return None
        return _html(render("refused.html", reason="wrong operator token"), 403)
    if session_valid(request.cookies.get(SESSION_COOKIE), wanted, time.time()):
        return None
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _html(render("login.html", target=target, problem=None), 401)


def render(template: str, **context: Any) -> str:
    return TEMPLATES.get_template(template).render(**context)


async def _page(request: Request, build: Any, template: str) -> Response:
    """The page ``template`` (or its live part for ``?fragment=1``) over what ``build(endpoint)`` read; read and
    rendered in a worker thread, so that machines' requests are not held up by a big page."""
    endpoint = endpoint_of(request)
    refused = _gate(request, endpoint)
    if refused is not None:
        return refused
    settings = endpoint.config.settings
    extra = {"fragment": request.query_params.get("fragment") == "1", "refresh_seconds": settings.cycle_seconds,
             "manager": settings.manager_name, "logout": settings.operator_token is not None}

    def read_and_render() -> str | None:
        context = build(endpoint)
        return None if context is None else render(template, **context, **extra)

    try:
        body = await run_in_threadpool(read_and_render)
    except StoreError as exc:
        return _html(render("refused.html", reason=f"the state store cannot be read now: {exc}"), 503)
    if body is None:
        return _html(render("refused.html", reason="no such machine or space"), 404)
    return _html(body)


def _window(request: Request) -> str:
    chosen = request.query_params.get("window", "6h")
    if chosen not in WINDOWS:
        raise Refused(400, f"window must be one of {', '.join(WINDOWS)}")
    return chosen


async def overview(request: Request) -> Response:
    window = _window(request)
    return await _page(request, lambda e: pages.overview(e.config, e.store, e.clock(), window, WINDOWS[window]),
                       "overview.html")


async def space(request: Request) -> Response:
    window, name = _window(request), request.path_params["space"]
    return await _page(request, lambda e: pages.space(e.config, e.store, e.clock(), name, window, WINDOWS[window]),
                       "space.html")


async def machines(request: Request) -> Response:
    query = request.query_params
    state = query.get("state") or None
    if state is not None and state not in STATES:
        raise Refused(400, f"state must be one of {', '.join(STATES)}")
    page = query.get("page", "1")
    if not page.isdigit() or not 1 <= int(page) <= 10**7:
        raise Refused(400, "page must be a whole number from 1")
    text = (query.get("q") or "").strip()[:200] or None
    space_name = query.get("space") or None

    def build(e: Endpoint) -> dict[str, Any]:
        found = Browse(e.store).machines(space=space_name, state=state, text=text,
                                         offset=(int(page) - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        return pages.machines(e.config, e.store, e.clock(), found, space_name, state, text)

    return await _page(request, build, "machines.html")


async def machine(request: Request) -> Response:
    space_name, name = request.path_params["space"], request.path_params["name"]
    return await _page(request, lambda e: pages.machine(e.store, e.joboutputs, e.clock(), space_name, name),
                       "machine.html")


async def joboutput(request: Request) -> Response:
    """One joboutputs file of a machine, as plain text (the browser shows it, runs nothing)."""
    endpoint = endpoint_of(request)
    refused = _gate(request, endpoint)
    if refused is not None:
        return refused
    p = request.path_params
    data = await run_in_threadpool(endpoint.joboutputs.read, p["space"], p["name"], check_name(p["file"]))
    if data is None:
        return _html(render("refused.html", reason="no such joboutputs file"), 404)
    return PlainTextResponse(data.decode("utf-8", "replace"), headers=HEADERS)


async def root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=303)


async def login(request: Request) -> Response:
    """The login form's POST: the operator token in, a session cookie out."""
    endpoint = endpoint_of(request)
    wanted = endpoint.config.settings.operator_token
    if not _same_origin(request):
        return _html(render("refused.html", reason="a login must come from this page's own form"), 403)
    client = request.client.host if request.client else ""
    wait = endpoint.limiter.allow(("login", client), endpoint.monotonic())
    if wait > 0:
        return _html(render("refused.html", reason=f"too many logins; retry in {wait:.0f}s"), 429,
                     {"Retry-After": str(max(1, round(wait)))})
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _html(render("refused.html", reason="the login form is too large"), 413)
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = (form.get("next") or ["/ui/"])[0]
    if not target.startswith("/ui/") or target.startswith("//"):
        target = "/ui/"
    if wanted is None:
        return _html(render("refused.html", reason="no operator token is configured: nothing to log in with"), 403)
    if not hmac.compare_digest(token.encode(), wanted.encode()):
        return _html(render("login.html", target=target, problem="wrong operator token"), 403)
    answer = RedirectResponse(target, status_code=303, headers=HEADERS)
    answer.set_cookie(SESSION_COOKIE, session_value(wanted, int(time.time())), max_age=SESSION_SECONDS,
                      path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict")
    return answer


def _same_origin(request: Request) -> bool:
    """The form was posted from this site's own page, as far as the browser says (Sec-Fetch-Site, Origin)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or urllib.parse.urlsplit(origin).netloc == request.headers.get("host")


async def logout(request: Request) -> Response:
    answer = RedirectResponse("/ui/", status_code=303, headers=HEADERS)
    answer.delete_cookie(SESSION_COOKIE, path="/", secure=request.url.scheme == "https", httponly=True,
                         samesite="strict")
    return answer


def routes() -> list[BaseRoute]:
    return [
        Route("/", root, methods=["GET"]),
        Route("/ui/", overview, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/spaces/{space}", space, methods=["GET"]),
        Route("/ui/machines", machines, methods=["GET"]),
        Route("/ui/machines/{space}/{name}", machine, methods=["GET"]),
        Route("/ui/machines/{space}/{name}/joboutputs/{file}", joboutput, methods=["GET"]),
        Mount("/ui/static", StaticFiles(packages=[("vcycle.web", "static")]), name="static"),
    ]

