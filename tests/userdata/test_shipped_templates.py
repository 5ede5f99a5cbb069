"""The templates shipped in vcycle.userdata: golden files, cloud-init's own schema validator, bash -n and
shellcheck, and the container entrypoint run for real against a local HTTPS endpoint.

cloud-init and shellcheck are Debian's packages (`make test` installs them where it can); without them
these tests skip and say why, except under CI=true, where they fail.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import imds
import pytest
import yaml
from test_render import render, site

from vcycle.core.model import CreateOrder
from vcycle.userdata.render import render_user_data

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
OPTIONS = {
    "pilot-container": "user_data_option_pilot_command = echo 'working'; sleep 1",
    "htcondor-startd": "user_data_option_condor_host = cm.example.org\nuser_data_option_pool_token = eyJ.x.y",
    "cernvm-dirac-pilot": "user_data_option_dirac_vo = belle\nuser_data_option_dirac_setup = Belle-KEK",
    "slurm-worker": "user_data_option_slurm_conf_server = slurmctld.example.org:6817\n"
                    "user_data_option_slurm_features = cloud avx2\nuser_data_option_munge_key_base64 = c2VjcmV0",
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


def test_a_sitedirector_pilot_boots_its_wrapper_in_a_valid_cloud_config(tmp_path: Path) -> None:
    """The cernvm-dirac-pilot template with a pilot DIRAC's SiteDirector submitted through the Vcycle CE."""
    import base64
    import dataclasses

    from test_render import SHUTDOWN

    from vcycle.core.model import CreateOrder, PilotRequest
    from vcycle.userdata.render import render_user_data

    config = site(tmp_path, "cernvm-dirac-pilot", OPTIONS["cernvm-dirac-pilot"])
    space = config.spaces["sp.example.org"]
    wrapper = "#!/bin/bash\n/usr/bin/env python3 << EOF\nprint('pilot')\nEOF\n"
    pilot = PilotRequest("vcycle-mt-golden0001", space.name, "mt", "0123456789abcdef0123456789abcdef", SHUTDOWN,
                         wrapper)
    order = dataclasses.replace(CreateOrder(space.name, "mt", 4, None, SHUTDOWN, None, "test"), pilot=pilot)
    assert wrapper not in repr(order)  # the wrapper carries a proxy: never in a log line
    text = render_user_data(space, space.machinetypes["mt"], pilot.name, order, "req", "tok",
                            manager="factory.example.org").decode()
    document = yaml.safe_load(text)
    files = {f["path"]: f for f in document["write_files"]}
    assert base64.b64decode(files["/usr/local/sbin/vcycle-dirac-pilot-wrapper"]["content"]).decode() == wrapper
    script = files["/usr/local/sbin/vcycle-dirac-pilot"]["content"]
    assert "DIRAC_PILOT_STAMP=0123456789abcdef0123456789abcdef /usr/local/sbin/vcycle-dirac-pilot-wrapper" in script
    assert "dirac-pilot.py" not in script  # the wrapper fetches and runs the pilot itself
    path = tmp_path / "user-data"
    path.write_text(text)
    done = subprocess.run([tool("cloud-init"), "schema", "--config-file", str(path)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and "Valid cloud-config" in done.stdout, done.stdout + done.stderr
    # a site's own old-style template gets them too
    own = tmp_path / "spaces" / "sp.example.org" / "machinetypes" / "mt" / "files" / "own"
    own.write_text("#!/bin/sh\necho ##user_data_pilot_wrapper_base64## | base64 -d > w\n"
                   "DIRAC_PILOT_STAMP=##user_data_pilot_stamp## sh w\n")
    mt = site(tmp_path, "own").spaces["sp.example.org"].machinetypes["mt"]
    old_style = render_user_data(space, mt, pilot.name, order, "req", "tok", manager="m").decode()
    assert old_style == (f"#!/bin/sh\necho {base64.b64encode(wrapper.encode()).decode()} | base64 -d > w\n"
                         f"DIRAC_PILOT_STAMP={pilot.stamp} sh w\n")
    (tmp_path / "script.sh").write_text(script)
    checked = subprocess.run([tool("shellcheck"), str(tmp_path / "script.sh")], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout


def hard_end_of(text: str) -> str:
    """The hard end of a rendered VM form: the cloud-config's vcycle-hard-end script, or its lines in a script."""
    if not text.startswith("#!"):
        files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
        return files["/usr/local/sbin/vcycle-hard-end"]
    found = re.search(r"^# The hard end:.*?^nohup setsid .*?$", text, re.S | re.M)
    assert found, "no hard end in the rendered script"
    return found.group(0)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_a_vm_powers_itself_off_past_its_shutdown_time_with_no_manager(tmp_path: Path, name: str) -> None:
    """The VM form's own timer, run for real with poweroff replaced by a marker file: it returns at once, and the
    machine powers off hard_end_seconds past its shutdown time, not before. The shutdown time is in whole
    seconds, as the machine is told it (MJF's shutdowntime, the template's shutdown_time)."""
    config = site(tmp_path, name, OPTIONS[name] + "\nuser_data_option_hard_end_seconds = 1")
    space = config.spaces["sp.example.org"]
    shutdown = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    order = CreateOrder(space.name, "mt", 4, None, shutdown, None, "test")
    text = render_user_data(space, space.machinetypes["mt"], "vcycle-mt-golden0001", order, "req", "tok",
                            manager="factory.example.org").decode()
    script = tmp_path / "hard-end.sh"
    script.write_text("#!/bin/sh\n" + hard_end_of(text))
    marker = tmp_path / "powered-off"
    started = time.monotonic()
    subprocess.run(["sh", str(script)], env={**os.environ, "VCYCLE_POWEROFF": f"touch {marker}"}, check=True,
                   timeout=10)
    assert time.monotonic() - started < 2  # it only starts the timer
    assert not marker.exists()
    while not marker.exists() and time.monotonic() - started < 15:
        time.sleep(0.2)
    assert marker.exists() and datetime.now(UTC) >= shutdown + timedelta(seconds=1)


@pytest.mark.parametrize("name", ["htcondor-startd", "pilot-container", "slurm-worker"])
def test_a_container_form_never_powers_off_its_host(tmp_path: Path, name: str) -> None:
    """Local machines and pods run the script form: it has no hard end (their own timeout or deadline ends them),
    so a local machine run by root can never power off the host."""
    script = container_form(tmp_path, name)
    assert "poweroff" not in script and "hard end" not in script


def test_the_schema_validator_rejects_a_broken_cloud_config(tmp_path: Path) -> None:
    validator = tool("cloud-init")
    path = tmp_path / "bad"
    path.write_text("#cloud-config\nruncmd: 3\n")
    assert subprocess.run([validator, "schema", "--config-file", str(path)], capture_output=True,
                          check=False).returncode != 0


class _Joboutputs(BaseHTTPRequestHandler):
    received: ClassVar[dict[str, bytes]] = {}
    authorization: ClassVar[set[str]] = set()
    drain: ClassVar[str | None] = None  # answered to heartbeats as Vcycle-Drain, as vcycle does when draining

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        name = self.path.rsplit("/", 1)[-1]
        self.received[name] = self.rfile.read(length)
        self.authorization.add(self.headers.get("Authorization", ""))
        self.send_response(201)
        if name == "vm-heartbeat" and self.drain is not None:
            self.send_header("Vcycle-Drain", self.drain)
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
    _Joboutputs.received, _Joboutputs.authorization, _Joboutputs.drain = {}, set(), None
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


def container_form(tmp_path: Path, name: str) -> str:
    """``name`` rendered for a space whose cloud runs the user-data as a script (Kubernetes, local)."""
    config = site(tmp_path, name, OPTIONS[name])
    space = dataclasses.replace(config.spaces["sp.example.org"], runs_script=True)
    return render(dataclasses.replace(config, spaces={space.name: space}), token="tok")


def test_the_htcondor_startd_template_has_a_container_form(tmp_path: Path) -> None:
    """Where the cloud runs a script (a pod, a local machine), htcondor-startd is a script that runs the startd
    as the container's own user, with its vcycle name in its ads; its cloud-config form is left for VMs."""
    script = container_form(tmp_path, "htcondor-startd")
    assert script == (GOLDEN / "shipped-htcondor-startd-container.expected").read_text()
    assert script.startswith("#!/bin/bash\n") and "#cloud-config" not in script
    assert 'VCYCLE_MACHINE = "vcycle-mt-golden0001"' in script
    assert "STARTD_ATTRS = \\$(STARTD_ATTRS) VCYCLE_MACHINE VCYCLE_SPACE" in script  # left for HTCondor to expand
    path = tmp_path / "startd.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0
    done = subprocess.run([tool("shellcheck"), str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_the_pilot_container_template_is_the_same_in_both_forms_but_for_the_hard_end(tmp_path: Path) -> None:
    vm = render(site(tmp_path, "pilot-container", OPTIONS["pilot-container"]), token="tok")
    assert container_form(tmp_path, "pilot-container") == vm.replace(hard_end_of(vm) + "\n\n", "")


@pytest.mark.parametrize(("cloud", "notice", "kind"), [
    ("ec2", {"action": "terminate", "time": "2026-01-01T14:02:00Z"}, "spot"),
    ("azure", imds.AZURE_PREEMPT, "preempt"),
])
def test_a_machine_reports_its_clouds_interruption_notice_at_once(
        tmp_path: Path, https_endpoint: dict[str, Any], cloud: str, notice: dict[str, Any], kind: str) -> None:
    """The shipped report functions watch the metadata service while the pilot runs and report the notice,
    unchanged, as joboutputs/interruption (which the endpoint reads with core/interruptions.py)."""
    tool("curl")
    from vcycle.core import interruptions

    service = imds.Metadata(cloud)
    timer = threading.Timer(2.0, service.give_notice, (notice,))  # due while the pilot works
    timer.start()
    try:
        options = "user_data_option_pilot_command = sleep 9"
        text = render(site(tmp_path, "pilot-container", options), token="s3cret")
        text = text.replace("https://vcycle.example.org:8443", f"https://127.0.0.1:{https_endpoint['port']}")
        entrypoint = tmp_path / "entrypoint"
        entrypoint.write_text(text)
        env = {**os.environ, "CURL_CA_BUNDLE": https_endpoint["ca"],
               "VCYCLE_METADATA_URL": service.url}
        done = subprocess.run(["bash", str(entrypoint)], capture_output=True, text=True, timeout=60, env=env,
                              check=False)
    finally:
        timer.cancel()
        service.close()
    assert done.returncode == 0, done.stderr
    report = json.loads(_Joboutputs.received["interruption"])
    assert report["kind"] == kind
    parsed = interruptions.parse(report)
    assert parsed.kind == kind
    if cloud == "ec2":
        assert report["notice"] == notice
    else:
        assert report["notice"]["Events"] == [notice]
    assert len(service.gets) >= 2  # it asked before the notice was due, and again after


def test_without_a_metadata_service_the_watch_gives_up_and_reports_nothing(
        tmp_path: Path, https_endpoint: dict[str, Any]) -> None:
    tool("curl")
    text = render(site(tmp_path, "pilot-container", "user_data_option_pilot_command = sleep 12"), token="s3cret")
    text = text.replace("https://vcycle.example.org:8443", f"https://127.0.0.1:{https_endpoint['port']}")
    entrypoint = tmp_path / "entrypoint"
    entrypoint.write_text(text)
    env = {**os.environ, "CURL_CA_BUNDLE": https_endpoint["ca"], "VCYCLE_METADATA_URL": "http://127.0.0.1:9"}
    done = subprocess.run(["bash", "-x", str(entrypoint)], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "interruption" not in _Joboutputs.received
    assert done.stderr.count("/latest/api/token") == 3  # three silent rounds, then it stopped asking


def test_a_drain_in_the_heartbeats_answer_reaches_the_pilot_once(tmp_path: Path,
                                                                  https_endpoint: dict[str, Any]) -> None:
    """vcycle answers a draining machine's heartbeat with Vcycle-Drain: the report functions write the reason to
    VCYCLE_DRAIN_FILE (which the pilot can watch) and run drain_command once, however many heartbeats follow."""
    tool("curl")
    _Joboutputs.drain = "drain: drifted (image changed)"
    marks = tmp_path / "drained.txt"
    options = ("user_data_option_heartbeat_seconds = 1\nuser_data_option_watch_interruptions = false\n"
               "user_data_option_pilot_command = while [ ! -e \"$VCYCLE_DRAIN_FILE\" ]; do sleep 0.2; done; "
               "sleep 3; cat \"$VCYCLE_DRAIN_FILE\"\n"
               f"user_data_option_drain_command = echo told >> {marks}")
    text = render(site(tmp_path, "pilot-container", options), token="s3cret")
    text = text.replace("https://vcycle.example.org:8443", f"https://127.0.0.1:{https_endpoint['port']}")
    entrypoint = tmp_path / "entrypoint"
    entrypoint.write_text(text)
    env = {**os.environ, "CURL_CA_BUNDLE": https_endpoint["ca"], "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(entrypoint)], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "vcycle-drain").read_text() == "drain: drifted (image changed)\n"
    assert marks.read_text() == "told\n"  # once, though heartbeats went on for 3 s
    assert b"drain: drifted (image changed)" in _Joboutputs.received["pilot.log"]
