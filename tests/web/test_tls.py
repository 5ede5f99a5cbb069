"""The endpoint served by uvicorn over real TLS: tokens, X.509 client certificates and proxies, slow clients.

A throwaway CA (tests/web/pki.py) issues the server's certificate and the
clients'; Python's ssl module verifies them on both sides, RFC 3820 proxies
included.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pki import PKI, grid_name
from webtest import Site, make_site

from vcycle.testing import free_port
from vcycle.web import machine_routes
from vcycle.web.app import create_app
from vcycle.web.server import Background, make_server

ROBOT = (("DC", "org"), ("DC", "example"), ("OU", "robots"), ("CN", "pilot robot"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Site, PKI, str]]:
    pki = PKI.create(tmp_path / "pki")
    cert, key = pki.issue("server", grid_name(("DC", "org"), ("DC", "example"), ("CN", "localhost")), server=True)
    port = free_port()
    site = make_site(tmp_path / "site", settings={
        "https_listen": f"127.0.0.1:{port}", "https_cert": cert, "https_key": key,
        "https_client_ca": pki.directory / "ca.pem", "heartbeat_flush_seconds": 0.1})
    background = Background(make_server(create_app(site.endpoint), site.config.settings))
    background.start()
    try:
        yield site, pki, f"https://127.0.0.1:{port}"
    finally:
        background.stop()


def client(pki: PKI, cert: Path | None = None, key: Path | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.directory / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return httpx.Client(verify=context, timeout=10)


def test_a_heartbeat_over_tls_reaches_the_store(served: tuple[Site, PKI, str]) -> None:
    site, pki, url = served
    site.machine("m1")
    with client(pki) as http:
        answer = http.put(f"{url}/machines/sp/m1/joboutputs/vm-heartbeat", content=b"1\n", headers=site.auth("m1"))
        assert answer.status_code == 204
        assert http.get(f"{url}/machines/sp/m1/jobfeatures/allocated_cpu").text == "2\n"
    deadline = time.monotonic() + 10
    while "m1" not in site.store.heartbeats("sp") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.store.heartbeats("sp")["m1"].address == "127.0.0.1"


def test_a_client_certificate_or_its_proxy_with_the_machinetypes_dn(served: tuple[Site, PKI, str]) -> None:
    site, pki, url = served
    site.machine("m1")
    cert, key = pki.issue("robot", grid_name(*ROBOT))
    proxy = pki.proxy("robot-proxy", cert, key)
    longer, longer_key = pki.issue("robot2", grid_name(*ROBOT, ("CN", "other")))
    path = f"{url}/machines/sp/m1/joboutputs/pilot.log"
    with client(pki, cert, key) as http:
        assert http.put(path, content=b"by certificate").status_code == 204
    with client(pki, proxy) as http:
        assert http.put(path, content=b"by proxy").status_code == 204
    with client(pki, longer, longer_key) as http:  # the old vcycle's prefix match would have let it in
        answer = http.put(path, content=b"x")
        assert answer.status_code == 403 and "may not act for machine" in answer.text
    with client(pki) as http:
        assert http.put(path, content=b"x").status_code == 401


def test_a_certificate_from_an_unknown_ca_is_refused_in_the_handshake(served: tuple[Site, PKI, str],
                                                                      tmp_path: Path) -> None:
    site, pki, url = served
    site.machine("m1")
    stranger = PKI.create(tmp_path / "stranger")
    cert, key = stranger.issue("robot", grid_name(*ROBOT))
    with client(pki, cert, key) as http, pytest.raises(httpx.HTTPError):
        http.put(f"{url}/machines/sp/m1/joboutputs/log", content=b"x")


def test_a_slow_client_is_cut_off_and_does_not_hold_up_others(served: tuple[Site, PKI, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    site, pki, url = served
    site.machine("m1")
    monkeypatch.setattr(machine_routes, "BODY_SECONDS", 1.0)
    port = int(url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(pki.directory / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw,
                                                                                    server_hostname="127.0.0.1") as tls:
        tls.sendall(f"PUT /machines/sp/m1/joboutputs/log HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                    f"Authorization: Bearer {site.tokens['m1']}\r\n\r\n0123456789".encode())
        started = time.monotonic()
        with client(pki) as http:  # meanwhile, others are served at once
            assert http.get(f"{url}/machines/sp/m1/machinefeatures/total_cpu").status_code == 200
        assert time.monotonic() - started < 1.0
        tls.settimeout(10)
        answer = ""
        while "nothing was kept" not in answer:
            chunk = tls.recv(4096).decode()
            if not chunk:
                break
            answer += chunk
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "nothing was kept" in answer
    assert not (Path(site.config.settings.joboutputs_dir) / "sp/m1/log").exists()


def test_serve_with_a_missing_key_says_which_key_of_which_file(tmp_path: Path) -> None:
    conf = tmp_path / "v.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
https_listen = 127.0.0.1:{free_port()}
https_cert = {tmp_path}/missing-cert.pem
https_key = {tmp_path}/missing-key.pem
[space sp]
api = fake
[machinetype sp mt]
user_data = pilot-container
target_share = 1
backoff_seconds = 60
fizzle_seconds = 60
""")
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "serve", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{conf}: [settings] https_key: {tmp_path}/missing-key.pem does not exist" in done.stderr
    assert f"[settings] https_cert: {tmp_path}/missing-cert.pem does not exist" in done.stderr
