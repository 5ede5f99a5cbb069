"""``vcycle cycle --once`` against a real Kubernetes control plane on this machine (scripts/kubernetes_testbed.py,
kwok as the kubelet), as cron runs it, through the service account of etc/kubernetes/vcycle-rbac.yaml."""

from __future__ import annotations

import base64
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubespace
import pytest
from vctest import vcycle

from vcycle.testing import wait_for


def write(tmp_path: Path, space: kubespace.Space, *, limit: int, machinetypes: str, extra: str = "") -> Path:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
max_create_fraction = 1
{extra}

[space pods]
api = kubernetes
kubeconfig = {space.kubeconfig}
processors_limit = {limit}
https_host = vcycle.example.org
{machinetypes}
""")
    return conf


PILOT = """
[machinetype pods pilot]
container_image = registry.example/pilot:1
user_data = pilot-container
user_data_option_pilot_command = sleep 3600
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
mb_per_processor = 512
"""


@pytest.fixture
def kspace(kubernetes_testbed: Any, tmp_path: Path) -> Any:
    space = kubespace.make(kubernetes_testbed, tmp_path)
    yield space
    kubespace.remove(space)


def ours(space: kubespace.Space) -> list[dict[str, Any]]:
    return [p for p in space.pods() if p["metadata"].get("labels", {}).get("vcycle-space") == "pods"]


def test_fill_label_read_back_and_replace_a_failed_pod(kspace: kubespace.Space, tmp_path: Path) -> None:
    kspace.foreign_pod("not-vcycles")
    conf = write(tmp_path, kspace, limit=4, machinetypes=PILOT)
    done = vcycle(conf, "cycle", "--once")
    assert done.returncode == 0, done.stderr
    pods = ours(kspace)
    assert len(pods) == 3  # the foreign pod holds 1 of the 4 processors
    for pod in pods:
        assert pod["metadata"]["labels"]["vcycle-manager"] == "e2e"
        assert pod["metadata"]["annotations"]["vcycle-machinetype"] == "pilot"
        pilot = pod["spec"]["containers"][0]
        assert pilot["resources"]["requests"] == {"cpu": "1", "memory": "512Mi"}
        env = {e["name"]: e.get("value") for e in pilot["env"]}
        assert env["MACHINEFEATURES"] == (f"https://vcycle.example.org:443/machines/pods/{pod['metadata']['name']}"
                                          "/machinefeatures")
        user_data = base64.b64decode(kspace.admin("GET", f"/secrets/{pod['metadata']['name']}")["data"]["user-data"])
        assert user_data.startswith(b"#!/bin/bash\n")
        assert f"vcycle pilot-container: the entrypoint of machine {pod['metadata']['name']}".encode() in user_data
    wait_for(lambda: all(p["status"].get("phase") == "Running" for p in ours(kspace)))
    victim = pods[0]["metadata"]["name"]
    failing = {"metadata": {"annotations": {"pod-fail.stage.kwok.x-k8s.io/delay": "0s"}}}
    kspace.admin("PATCH", f"/pods/{victim}", failing)
    wait_for(lambda: kspace.admin("GET", f"/pods/{victim}")["status"].get("phase") == "Failed")
    assert vcycle(conf, "cycle", "--once").returncode == 0  # FAILED: deleted
    assert vcycle(conf, "cycle", "--once").returncode == 0  # gone: replaced
    names = {p["metadata"]["name"] for p in ours(kspace)}
    assert victim not in names and len(names) == 3
    history = vcycle(conf, "machines", "history", victim).stdout
    assert "Failed exit 1 Error" in history
    assert "not-vcycles" in {p["metadata"]["name"] for p in kspace.pods()}  # foreign: untouched


def test_the_htcondor_startd_template_runs_in_a_pod_as_a_script(kspace: kubespace.Space, tmp_path: Path) -> None:
    startd = """
[machinetype pods startd]
container_image = registry.example/htcondor-execute:24
user_data = htcondor-startd
user_data_option_condor_host = cm.example.org
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
"""
    conf = write(tmp_path, kspace, limit=1, machinetypes=startd)
    assert vcycle(conf, "check-config", "--quiet").returncode == 0
    assert vcycle(conf, "cycle", "--once").returncode == 0
    [pod] = ours(kspace)
    name = pod["metadata"]["name"]
    script = base64.b64decode(kspace.admin("GET", f"/secrets/{name}")["data"]["user-data"]).decode()
    assert script.startswith("#!/bin/bash\n") and "#cloud-config" not in script
    assert f'VCYCLE_MACHINE = "{name}"' in script and "CONDOR_HOST = cm.example.org" in script
    shellcheck = subprocess.run(["shellcheck", "-s", "bash", "-"], input=script, capture_output=True, text=True)
    if shellcheck.returncode == 127:
        pytest.skip("shellcheck is not installed (make tools)")
    assert shellcheck.returncode == 0, shellcheck.stdout


def test_a_cloud_config_template_is_a_configuration_error_naming_the_key(kspace: kubespace.Space,
                                                                         tmp_path: Path) -> None:
    template = tmp_path / "vm.yaml"
    template.write_text("#cloud-config\nruncmd: [poweroff]\n")
    vm = f"""
[machinetype pods vm]
container_image = registry.example/pilot:1
user_data = {template}
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
"""
    conf = write(tmp_path, kspace, limit=2, machinetypes=vm + PILOT)
    checked = vcycle(conf, "check-config")
    assert checked.returncode == 2
    assert f"machinetype pods vm] user_data: does not render for a sample machine: user_data = {template}" \
        in checked.stderr
    assert "no part starting with '#!'" in checked.stderr
    assert vcycle(conf, "cycle", "--once").returncode in (0, 1)
    assert {p["metadata"]["annotations"]["vcycle-machinetype"] for p in ours(kspace)} == {"pilot"}


def run_killed(conf: Path, space: kubespace.Space | None = None, after: float = 0.0) -> None:
    """One ``vcycle cycle --once``; with ``space``, SIGKILLed ``after`` seconds past the first pod it makes."""
    before = {p["metadata"]["name"] for p in ours(space)} if space is not None else set()
    process = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "cycle", "--once", "--config", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    if space is not None:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if {p["metadata"]["name"] for p in ours(space)} - before:
                break
            time.sleep(0.02)
        time.sleep(after)
        process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()


def test_sigkills_mid_create_leave_no_pod_or_secret_unknown_to_the_store(kspace: kubespace.Space,
                                                                         tmp_path: Path) -> None:
    """Real ``vcycle cycle --once`` processes SIGKILLed while they create pods (a seeded moment after the first
    new pod appears): every pod and Secret in the namespace is a machine the store knows, and a cycle that runs to
    its end takes over, within the limit."""
    conf = write(tmp_path, kspace, limit=30, machinetypes=PILOT.replace("[machinetype", "api_timeout_seconds = 2\n\n"
                                                                        "[machinetype"),
                 extra="create_workers = 4\nrequest_timeout_seconds = 2")
    chance = random.Random(18)
    partial = 0
    for _ in range(5):
        run_killed(conf, kspace, chance.uniform(0.0, 0.3))
        pods = {p["metadata"]["name"] for p in ours(kspace)}
        db = sqlite3.connect(tmp_path / "state.db")
        known = {name for (name,) in db.execute("SELECT name FROM machines")}
        db.close()
        secrets = {s["metadata"]["name"] for s in kspace.secrets()
                   if s["metadata"].get("labels", {}).get("vcycle-space") == "pods"}
        assert pods <= known and secrets <= known
        partial += len(pods) < 30
        time.sleep(2.1)  # the killed run's unconfirmed creates time out (api_timeout_seconds)
    assert partial  # the kills landed while pods were being made
    run_killed(conf)
    db = sqlite3.connect(tmp_path / "state.db")
    known = {name for (name,) in db.execute("SELECT name FROM machines")}
    pods = {p["metadata"]["name"] for p in ours(kspace)}
    assert pods <= known and 0 < len(pods) <= 30
