"""The HTTPS endpoint stops at once on SIGTERM, ``vcycle serve`` and the daemon's alike, though clients hold idle
keep-alive connections (uvicorn's own close waited for their TLS close_notify, which idle clients never send,
until its graceful-shutdown timeout: 10 s), while a request in flight is still answered."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from vcycle.testing import FakeConnector, free_port, make_server_pki, wait_for


def settings(tmp_path: Path, port: int) -> str:
    make_server_pki(str(tmp_path / "pki"))
    return f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
cycle_seconds = 1
max_create_fraction = 1
https_listen = 127.0.0.1:{port}
https_cert = {tmp_path}/pki/server.pem
https_key = {tmp_path}/pki/server.key

[space e2e]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 1
https_host = 127.0.0.1
https_port = {port}

[machinetype e2e pilot]
user_data = pilot-container
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0
"""


def idle_connection(port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    """A keep-alive connection that made one request and now waits, as a browser's or a monitor's does."""
    def answered() -> http.client.HTTPSConnection | None:
        try:
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
            connection.request("GET", "/api/v1/status")
            connection.getresponse().read()
            return connection
        except OSError:
            return None

    deadline = time.monotonic() + 30
    while (found := answered()) is None:
        assert time.monotonic() < deadline, "the endpoint did not answer"
        time.sleep(0.1)
    return found


def test_vcycle_serve_stops_at_once_with_idle_keep_alive_clients(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "v.conf"
    conf.write_text(settings(tmp_path, port))
    context = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
    server = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "serve", "--config", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        clients = [idle_connection(port, context) for _ in range(3)]
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        stopped = time.monotonic() - started
    finally:
        server.kill()
    assert stopped < 1.0, f"stopped {stopped:.2f} s after SIGTERM"
    assert server.stderr is not None and b"Traceback" not in server.stderr.read()
    for client in clients:
        client.close()


def test_the_daemons_endpoint_answers_a_request_in_flight_and_stops_at_once(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "v.conf"
    conf.write_text(settings(tmp_path, port))
    context = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
    log = tmp_path / "vcycle.log"
    daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf), "--log-file",
                               str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cloud = FakeConnector(state_file=str(tmp_path / "cloud.json"))
    try:
        wait_for(lambda: (tmp_path / "cloud.json").exists() and len(cloud.ours()) == 1)
        machine = cloud.ours()[0].name
        saved = json.loads((tmp_path / "cloud.json").read_text())["machines"]
        user_data = base64.b64decode(next(m["user_data"] for m in saved if m["name"] == machine)).decode()
        token = re.search(r"^VCYCLE_TOKEN=(\S+)$", user_data, re.M).group(1).strip("'")  # type: ignore[union-attr]
        idle = idle_connection(port, context)
        upload = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
        body = b"a line of the pilot's log\n" * 40
        upload.sendall(f"PUT /machines/e2e/{machine}/joboutputs/pilot.log HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:20])
        upload.settimeout(0.5)
        try:
            early = upload.recv(100)
        except TimeoutError:
            early = b""
        assert early == b"", "the upload was answered before its body came: not in flight"
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        upload.sendall(body[20:])
        upload.settimeout(10)
        answer = upload.recv(200)
        assert answer.startswith(b"HTTP/1.1 2"), answer  # the request in flight was answered
        daemon.wait(timeout=60)
        exited = time.monotonic() - started  # its cycle done, its endpoint stopped
    finally:
        daemon.kill()
    assert exited < 5.0, f"the daemon stopped {exited:.2f} s after SIGTERM"  # its cycle may be running; 10.5 s before
    assert daemon.returncode == 0
    assert (tmp_path / "joboutputs" / "e2e" / machine / "pilot.log").read_bytes() == body
    assert daemon.stderr is not None and b"Traceback" not in daemon.stderr.read()
    idle.close()
