"""Serving the endpoint over TLS with uvicorn: ``vcycle serve``, or a thread of ``vcycle daemon``.

Start-up checks the certificate and key files (and the client CA, if any)
and reports a problem as a configuration error naming file, section and key.
With ``https_client_ca`` set, clients may present certificates (proxies
included); the verified identity reaches the application in the ASGI scope
(``extensions.tls.client_dn``), since uvicorn does not pass it on itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vcycle.core.sections import Config, Settings
from vcycle.errors import ConfigError, ConfigProblem
from vcycle.web import dn

log = logging.getLogger(__name__)


class _ClientDNProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, passing the verified client certificate's identity to the app."""

    client_dn: str | None = None
    stopping = False  # the server is shutting down

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        self.client_dn = dn.identity(peer) if peer else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.client_dn is not None:
            self.scope["extensions"] = {"tls": {"client_dn": self.client_dn}}

    def shutdown(self) -> None:
        """At a graceful shutdown, an idle keep-alive connection is dropped at once: closing it as uvicorn does
        waits for the client's TLS close_notify, which an idle client never sends, so the server waited out
        timeout_graceful_shutdown. A request in flight is still answered, and its connection dropped once the
        answer has left (one still being sent is closed as uvicorn closes it)."""
        self.stopping = True
        if (self.cycle is None or self.cycle.response_complete) and self._sent():
            self.transport.abort()
        else:
            super().shutdown()

    def on_response_complete(self) -> None:
        if self.stopping and self._sent():
            self.transport.abort()
            return
        super().on_response_complete()

    def _sent(self) -> bool:
        """Nothing is left in the transport's write buffer (an abort would drop it)."""
        try:
            return self.transport.get_write_buffer_size() == 0
        except (AttributeError, NotImplementedError, RuntimeError):
            return False


def check_files(settings: Settings) -> None:
    """ConfigError unless the certificate, key and client CA can be read and go together."""
    problems = []
    for key in ("https_cert", "https_key", "https_client_ca"):
        path = getattr(settings, key)
        if path is None:
            if key != "https_client_ca":
                problems.append(ConfigProblem(settings.file, "settings", key, "needed to serve HTTPS"))
            continue
        if not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "cannot be read by this user"
            problems.append(ConfigProblem(settings.file, "settings", key, f"{path} {why}"))
    if not problems:
        try:
            _context(settings)
        except (ssl.SSLError, OSError) as exc:
            problems.append(ConfigProblem(settings.file, "settings", "https_cert",
                                          f"{settings.https_cert} and {settings.https_key} cannot be used: "
                                          f"{getattr(exc, 'reason', None) or exc}"))
    if problems:
        raise ConfigError(problems)


def _context(settings: Settings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.https_cert), str(settings.https_key))
    ca = settings.https_client_ca
    if ca is not None:
        if os.path.isdir(ca):
            context.load_verify_locations(capath=ca)
        else:
            context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_OPTIONAL  # a token is enough; a certificate, if sent, must verify
        context.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    return context


def make_server(app: Any, settings: Settings, *, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``https_listen`` (or host/port), TLS as configured."""
    check_files(settings)
    listen_host, listen_port = settings.https_listen or ("127.0.0.1", 8443)
    config = uvicorn.Config(
        app, host=host or listen_host, port=port if port is not None else listen_port,
        ssl_certfile=settings.https_cert, ssl_keyfile=settings.https_key, http=_ClientDNProtocol,
        loop="uvloop", lifespan="on", log_config=None, access_log=False, server_header=False,
        timeout_keep_alive=30, timeout_graceful_shutdown=10, backlog=2048)
    config.load()
    config.ssl = _context(settings)
    return uvicorn.Server(config)


class Background:
    """The endpoint in a thread of the daemon; ``stop`` ends it gracefully."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.run, name="vcycle-https", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        waited = 0.0
        while not self.server.started and self.thread.is_alive() and waited < timeout:
            threading.Event().wait(0.05)
            waited += 0.05
        if not self.server.started:
            raise OSError("the HTTPS endpoint did not start (is the port free?)")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _tls(settings: Settings) -> tuple[object, ...]:
    """What the server is made from: where it listens and with which files."""
    return settings.https_listen, settings.https_cert, settings.https_key, settings.https_client_ca


class Served:
    """The endpoint served by the daemon, rebound when a reload changes ``https_listen`` or its files.

    The new server is checked (files readable, certificate and key a pair) before the old one stops; if it
    cannot listen, the old one is started again. Either way the log says where the endpoint is.
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.background = Background(make_server(app, settings))

    def start(self) -> None:
        self.background.start()

    def stop(self) -> None:
        self.background.stop()

    def reload(self, settings: Settings) -> None:
        if _tls(settings) == _tls(self.settings):
            return
        where = _where(self.settings)
        if settings.https_listen is None:
            log.warning("https_listen was removed: the endpoint goes on serving on %s until vcycle is restarted",
                        where)
            return
        try:
            server = make_server(self.app, settings)
        except ConfigError as exc:
            log.error("HTTPS endpoint kept on %s as it was: %s", where, "; ".join(str(p) for p in exc.problems))
            return
        self.background.stop()
        moved = Background(server)
        try:
            moved.start()
        except OSError as exc:
            log.error("HTTPS endpoint cannot serve on %s (%s): serving on %s again", _where(settings), exc, where)
            self.background = Background(make_server(self.app, self.settings))
            self.background.start()
            return
        self.background, self.settings = moved, settings
        log.info("HTTPS endpoint now on %s (was %s)", _where(settings), where)


def _where(settings: Settings) -> str:
    host, port = settings.https_listen or ("127.0.0.1", 8443)
    return f"https://{host}:{port}"


def describe(config: Config) -> str:
    return _where(config.settings)
