"""The daemon with its HTTPS endpoint, and a real pilot script talking to it with curl over TLS.

The daemon runs as a process with ``https_listen`` set and a fake cloud kept
in a file. The user-data it renders for a machine (the shipped
``pilot-container`` template) is then run with bash here, as the machine
would run it: it heartbeats with curl, runs its pilot command, and reports
its shutdown message and log. What vcycle shows afterwards comes from that.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pki import PKI, grid_name

from vcycle.testing import FakeConnector, free_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="the pilot script needs bash and curl (make tools installs curl)")


def test_a_pilot_heartbeats_and_reports_through_the_daemons_endpoint(tmp_path: Path) -> None:
    pki = PKI.create(tmp_path / "pki")
    cert, key = pki.issue("server", grid_name(("DC", "org"), ("DC", "example"), ("CN", "localhost")), server=True)
    port = free_port()
    conf = tmp_path / "v.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
cycle_seconds = 1
max_create_fraction = 1
https_listen = 127.0.0.1:{port}
https_cert = {cert}
https_key = {key}
heartbeat_flush_seconds = 0.2

[space e2e]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 1
https_host = 127.0.0.1
https_port = {port}

[machinetype e2e pilot]
user_data = pilot-container
user_data_option_pilot_command = echo working on a job; sleep 3
user_data_option_heartbeat_seconds = 1
heartbeat_file = vm-heartbeat
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0
""")
    log = tmp_path / "vcycle.log"
    daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf), "--log-file",
                               str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cloud = FakeConnector(state_file=str(tmp_path / "cloud.json"))
    try:
        wait_for(lambda: (tmp_path / "cloud.json").exists() and len(cloud.ours()) == 1)
        machine = cloud.ours()[0].name
        saved = json.loads((tmp_path / "cloud.json").read_text())["machines"]
        user_data = base64.b64decode(next(m["user_data"] for m in saved if m["name"] == machine))
        script = tmp_path / "user-data.sh"
        script.write_bytes(user_data)
        pilot = subprocess.run(["bash", str(script)], env={**os.environ, "TMPDIR": str(tmp_path),
                                                            "CURL_CA_BUNDLE": str(pki.directory / "ca.pem")},
                               capture_output=True, text=True, timeout=60)
        assert pilot.returncode == 0, pilot.stderr
        assert "curl:" not in pilot.stderr, pilot.stderr  # every upload was accepted

        outputs = tmp_path / "joboutputs" / "e2e" / machine
        assert (outputs / "pilot.log").read_text() == "working on a job\n"
        assert (outputs / "shutdown_message").read_text() == "200 Success\n"
        context = ssl.create_default_context(cafile=str(pki.directory / "ca.pem"))
        with httpx.Client(verify=context, base_url=f"https://127.0.0.1:{port}", timeout=10) as http:
            def reported() -> bool:
                found = http.get("/api/v1/machines", params={"space": "e2e"}).json()["machines"]
                return any(m["name"] == machine and m["shutdown_code"] == 200 and m["heartbeat_at"] for m in found)

            wait_for(reported)
            metrics = http.get("/metrics").text
            assert 'vcycle_machines{machinetype="pilot",space="e2e",state="running"} 1.0' in metrics
            assert "vcycle_heartbeats_received_total" in metrics
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0
    assert daemon.stderr is not None and b"Traceback" not in daemon.stderr.read()
    assert f"HTTPS endpoint on https://127.0.0.1:{port}" in log.read_text()
    with socket.socket() as sock:  # the endpoint stopped with the daemon
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_sighup_moves_the_endpoint_to_a_new_https_listen_and_keeps_it_when_the_new_one_is_unusable(
        tmp_path: Path) -> None:
    """A reload that changes https_listen rebinds (the old port closes, the new one answers over TLS); one that
    names a certificate that cannot be read keeps the endpoint where it was, and says so."""
    pki = PKI.create(tmp_path / "pki")
    cert, key = pki.issue("server", grid_name(("DC", "org"), ("DC", "example"), ("CN", "localhost")), server=True)
    first, second = free_port(), free_port()
    conf = tmp_path / "v.conf"
    text = f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
cycle_seconds = 1
https_listen = 127.0.0.1:{first}
https_cert = {cert}
https_key = {key}

[space e2e]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 0

[machinetype e2e pilot]
user_data = pilot-container
backoff_seconds = 600
fizzle_seconds = 0
"""
    conf.write_text(text)
    log = tmp_path / "vcycle.log"
    daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf), "--log-file",
                               str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = ssl.create_default_context(cafile=str(pki.directory / "ca.pem"))

    def answers(port: int) -> bool:
        try:
            return httpx.get(f"https://127.0.0.1:{port}/api/v1/status", verify=context, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: answers(first))
        conf.write_text(text.replace(f"https_listen = 127.0.0.1:{first}", f"https_listen = 127.0.0.1:{second}"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: answers(second))
        assert not answers(first)
        wait_for(lambda: f"HTTPS endpoint now on https://127.0.0.1:{second} (was https://127.0.0.1:{first})"
                 in log.read_text())
        conf.write_text(text.replace(f"https_cert = {cert}", f"https_cert = {tmp_path}/missing.pem"))  # back to first
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: f"HTTPS endpoint kept on https://127.0.0.1:{second} as it was: " in log.read_text())
        assert answers(second) and not answers(first)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0
    assert daemon.stderr is not None and b"Traceback" not in daemon.stderr.read()
