"""What every request handler of the endpoint shares, and how callers are authenticated.

Machines authenticate with their own token (``Authorization: Bearer``),
issued once in their user-data and stored only as a hash, valid for their
own paths while they are live; or, where the site keeps X.509, with a client
certificate whose DN (a proxy's owner's DN) equals the machinetype's
``https_x509dn``, verified by this server or by a trusted reverse proxy that
passes it in a header. Operators authenticate with the configured
``operator_token``; without one, the operator API is open only when the
endpoint listens on loopback alone.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from starlette.requests import Request

from vcycle.core.identity import hash_token
from vcycle.core.model import MachineRecord
from vcycle.core.sections import Config, MachinetypeConfig
from vcycle.errors import Refused
from vcycle.store import Store
from vcycle.store.joboutputs import Joboutputs
from vcycle.web import dn
from vcycle.web.beats import HeartbeatBuffer
from vcycle.web.directory import Directory
from vcycle.web.limits import RateLimiter
from vcycle.web.metrics import Metrics

# (space, machinetype, machine record, token or None) -> the machine's user-data
UserDataRenderer = Callable[[Config, MachineRecord, "str | None"], bytes]


@dataclass
class Endpoint:
    """The endpoint's shared state; ``config`` is replaced when the daemon reloads."""

    config: Config
    store: Store
    directory: Directory
    beats: HeartbeatBuffer
    joboutputs: Joboutputs
    limiter: RateLimiter
    metrics: Metrics
    clock: Callable[[], datetime]
    render: UserDataRenderer | None = None
    monotonic: Callable[[], float] = time.monotonic
    operator_open: bool = False  # no operator token needed (loopback-only listener without one)
    wake: Callable[[], None] | None = None  # asks the daemon for a cycle now (an interruption notice came)
    extra: dict[str, object] = field(default_factory=dict)

    def machinetype(self, record: MachineRecord) -> MachinetypeConfig | None:
        space = self.config.spaces.get(record.space)
        return space.machinetypes.get(record.machinetype) if space else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Refused(401, "the Authorization header must be 'Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})
    return value.strip()


def client_dn(request: Request, endpoint: Endpoint) -> str | None:
    """The verified client certificate's identity: from our own TLS, or from a trusted proxy's header."""
    tls = request.scope.get("extensions", {}).get("tls", {})
    found = tls.get("client_dn")
    if found:
        return str(found)
    settings = endpoint.config.settings
    client = request.client.host if request.client else None
    if client is not None and client in settings.trusted_proxies:
        header = request.headers.get(settings.trusted_proxy_dn_header)
        if header:
            return dn.normalise(header)
    return None


def authenticate_machine(request: Request, endpoint: Endpoint, record: MachineRecord, *, required: bool) -> str | None:
    """How the caller proved to be ``record``'s machine ('token' or 'x509'), None if it did not try.

    Raises Refused(401/403) for a wrong proof, or for none when ``required``.
    """
    token = bearer(request)
    if token is not None:
        if record.token_hash is not None and hmac.compare_digest(hash_token(token), record.token_hash):
            return "token"
        raise Refused(403, f"this token does not belong to machine {record.space}/{record.name}")
    identity = client_dn(request, endpoint)
    if identity is not None:
        mt = endpoint.machinetype(record)
        wanted = mt.https_x509dn if mt else None
        if wanted is not None and dn.normalise(wanted) == identity:
            return "x509"
        raise Refused(403, f"client certificate {identity!r} may not act for machine {record.space}/{record.name}")
    if required:
        raise Refused(401, f"machine {record.space}/{record.name}: send its token as 'Authorization: Bearer "
                           "TOKEN' or a client certificate", {"WWW-Authenticate": "Bearer"})
    return None


def authenticate_operator(request: Request, endpoint: Endpoint) -> None:
    wanted = endpoint.config.settings.operator_token
    token = bearer(request)
    if wanted is None:
        if endpoint.operator_open and token is None:
            return
        if endpoint.operator_open:
            raise Refused(403, "no operator token is configured; send none on this loopback-only endpoint")
        raise Refused(403, "the operator API needs [settings] operator_token when the endpoint listens beyond "
                           "loopback")
    if token is None:
        raise Refused(401, "send the operator token as 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.encode(), wanted.encode()):
        raise Refused(403, "wrong operator token")


def rate_limit(endpoint: Endpoint, record: MachineRecord) -> None:
    wait = endpoint.limiter.allow((record.space, record.name), endpoint.monotonic())
    if wait > 0:
        raise Refused(429, f"machine {record.name} is sending too many requests; retry in {wait:.0f}s",
                      {"Retry-After": str(max(1, round(wait)))})
