"""The templates shipped in vcycle.userdata: golden files, cloud-init's own schema validator, bash -n and
shellcheck, and the container entrypoint run for real against a local HTTPS endpoint.

cloud-init and shellcheck are Debian's packages (`make test` installs them where it can); without them
these tests skip and say why, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from test_userdata import render, site

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
OPTIONS = {
    "pilot-container": "user_data_option_pilot_command = echo 'working'; sleep 1",
    "htcondor-startd": "user_data_option_condor_host = cm.example.org\nuser_data_option_pool_token = eyJ.x.y",
    "cernvm-dirac-pilot": "user_data_option_dirac_vo = belle\nuser_data_option_dirac_setup = Belle-KEK",
}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed (Debian package {name}; `make test` installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: these tests must run)")
        pytest.skip(reason)
    return found


def scripts_of(text: str) -> list[str]:
    """The shell scripts in a rendered template: itself, or the scripts its cloud-config writes."""
    if text.startswith("#!"):
        return [text]
    document = yaml.safe_load(text)
    return [f["content"] for f in document.get("write_files", []) if f["content"].startswith("#!")]


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_shipped_template_matches_its_golden_file(tmp_path: Path, name: str) -> None:
    text = render(site(tmp_path, name, OPTIONS[name]), token="tok")
    assert text == (GOLDEN / f"shipped-{name}.expected").read_text()


@pytest.mark.parametrize("name", ["htcondor-startd", "cernvm-dirac-pilot"])
def test_cloud_config_passes_the_cloud_init_schema(tmp_path: Path, name: str) -> None:
    validator = tool("cloud-init")
    path = tmp_path / "user-data"
    path.write_text(render(site(tmp_path, name, OPTIONS[name]), token="tok"))
    done = subprocess.run([validator, "schema", "--config-file", str(path)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "Valid cloud-config" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_shell_parts_pass_bash_and_shellcheck(tmp_path: Path, name: str) -> None:
    checker = tool("shellcheck")
    scripts = scripts_of(render(site(tmp_path, name, OPTIONS[name]), token="tok"))
    assert scripts
    for index, script in enumerate(scripts):
        path = tmp_path / f"script-{index}.sh"
        path.write_text(script)
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0
        done = subprocess.run([checker, str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout


def test_the_schema_validator_rejects_a_broken_cloud_config(tmp_path: Path) -> None:
    validator = tool("cloud-init")
    path = tmp_path / "bad"
    path.write_text("#cloud-config\nruncmd: 3\n")
    assert subprocess.run([validator, "schema", "--config-file", str(path)], capture_output=True,
                          check=False).returncode != 0


class _Joboutputs(BaseHTTPRequestHandler):
    received: ClassVar[dict[str, bytes]] = {}
    authorization: ClassVar[set[str]] = set()

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.received[self.path.rsplit("/", 1)[-1]] = self.rfile.read(length)
        self.authorization.add(self.headers.get("Authorization", ""))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_endpoint(tmp_path: Path) -> Iterator[dict[str, Any]]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Joboutputs)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    _Joboutputs.received, _Joboutputs.authorization = {}, set()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"port": server.server_address[1], "ca": str(cert)}
    server.shutdown()


def test_container_entrypoint_runs_and_reports_over_https(tmp_path: Path, https_endpoint: dict[str, Any]) -> None:
    tool("curl")
    text = render(site(tmp_path, "pilot-container", OPTIONS["pilot-container"]), token="s3cret")
    text = text.replace("https://vcycle.example.org:8443", f"https://127.0.0.1:{https_endpoint['port']}")
    entrypoint = tmp_path / "entrypoint"
    entrypoint.write_text(text)
    env = {**os.environ, "CURL_CA_BUNDLE": https_endpoint["ca"]}
    done = subprocess.run(["bash", str(entrypoint)], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    received = _Joboutputs.received
    assert received["shutdown_message"] == b"200 Success\n"
    assert b"working" in received["pilot.log"]
    assert "vm-heartbeat" in received
    assert _Joboutputs.authorization == {"Bearer s3cret"}
