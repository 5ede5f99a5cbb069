"""``vcycle cycle --once`` against an Azure space, as cron runs it: real vcycle processes with the real
azure-mgmt-compute, azure-mgmt-network and azure-identity (a service principal's client secret, checked by the
token endpoint) over real TLS, to the project's fake Resource Manager (tests/fakearm.py, in this process: no
Azure compute emulator exists)."""

from __future__ import annotations

import base64
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import azurespace
from fakearm import Arm
from vctest import vcycle


def write(tmp_path: Path, arm: Arm, *, limit: int, spot: bool = False, extra: str = "", space: str = "") -> Path:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
max_create_fraction = 1
{extra}

[space azure]
{azurespace.space_lines(arm, tmp_path / "keys")}processors_limit = {limit}
https_host = vcycle.example.org
{space}

[machinetype azure pilot]
root_image = {azurespace.IMAGE}
flavor_names = Standard_B1s
user_data = pilot-container
user_data_option_pilot_command = sleep 3600
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
spot = {"true" if spot else "false"}
""")
    return conf


def ours(arm: Arm) -> list[dict]:
    return [vm for vm in arm.of_kind("vm") if vm["tags"].get("vcycle-space") == "azure"]


def test_fill_to_the_limit_tag_read_back_delete_a_failed_vm_and_replace_an_evicted_one(arm: Arm,
                                                                                      tmp_path: Path) -> None:
    arm.add_vm(azurespace.SUBSCRIPTION, azurespace.GROUP, "not-vcycles", azurespace.LOCATION, "Standard_B2s")
    conf = write(tmp_path, arm, limit=5, spot=True)
    assert vcycle(conf, "check-config", "--quiet").returncode == 0
    done = vcycle(conf, "cycle", "--once")
    assert done.returncode == 0, done.stderr
    vms = ours(arm)
    assert len(vms) == 3  # the foreign VM holds 2 of the 5 processors
    for vm in vms:
        assert vm["tags"]["vcycle-manager"] == "e2e" and vm["tags"]["vcycle-machinetype"] == "pilot"
        assert vm["properties"]["priority"] == "Spot" and vm["properties"]["evictionPolicy"] == "Delete"
        user_data = base64.b64decode(vm["_custom_data"])
        assert f"/machines/azure/{vm['name']}/machinefeatures".encode() in user_data
    assert {n["tags"]["vcycle-machine"] for n in arm.of_kind("nic")} == {vm["name"] for vm in vms}
    time.sleep(arm.op_seconds)
    failed, evicted = vms[0]["name"], vms[1]["name"]
    arm.set_power(failed, None, "Failed")  # type: ignore[arg-type]
    arm.vm(failed)["_error"] = {"code": "OSProvisioningTimedOut", "message": "OS Provisioning did not finish"}  # type: ignore[index]
    arm.evict(evicted)
    assert vcycle(conf, "cycle", "--once").returncode == 0  # the failed VM deleted, the evicted one replaced
    time.sleep(arm.op_seconds)
    assert vcycle(conf, "cycle", "--once").returncode == 0  # the failed one's gone: replaced
    names = {vm["name"] for vm in ours(arm)}
    assert failed not in names and evicted not in names and len(names) == 3
    history = vcycle(conf, "machines", "history", failed).stdout
    assert "OSProvisioningTimedOut" in history
    assert "not-vcycles" in arm.names("vm")  # foreign: untouched
    assert {n["tags"]["vcycle-machine"] for n in arm.of_kind("nic")} == names  # no NIC left behind


def test_a_throttled_space_is_skipped_and_says_until_when(arm: Arm, tmp_path: Path) -> None:
    conf = write(tmp_path, arm, limit=2)
    arm.fault("GET", "/virtualMachines", status=429, code="TooManyRequests", retry_after=900)
    started = time.monotonic()
    done = vcycle(conf, "cycle", "--once")
    assert time.monotonic() - started < 60
    assert "Retry-After 900 s" in done.stderr + done.stdout and "no call to Azure until" in done.stderr + done.stdout
    assert ours(arm) == []


def run_killed(conf: Path, arm: Arm | None = None, after: float = 0.0) -> None:
    """One ``vcycle cycle --once``; with ``arm``, SIGKILLed ``after`` seconds past the first NIC it makes."""
    before = set(arm.names("nic")) if arm is not None else set()
    process = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "cycle", "--once", "--config", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    if arm is not None:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if set(arm.names("nic")) - before:
                break
            time.sleep(0.01)
        time.sleep(after)
        process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()


def known(tmp_path: Path) -> set[str]:
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        return {name for (name,) in db.execute("SELECT name FROM machines")}
    finally:
        db.close()


def machines_of(arm: Arm) -> dict[str, set[str]]:
    """The machine names each kind of resource in the group is for."""
    return {"vm": {vm["name"] for vm in ours(arm)},
            "nic": {n["tags"]["vcycle-machine"] for n in arm.of_kind("nic")},
            "ip": {i["tags"]["vcycle-machine"] for i in arm.of_kind("ip")},
            "disk": {d["name"].removesuffix("-osdisk") for d in arm.of_kind("disk")}}


def test_sigkills_mid_create_leave_no_vm_nic_disk_or_ip_unknown_to_the_store(arm: Arm, tmp_path: Path) -> None:
    """Real ``vcycle cycle --once`` processes SIGKILLed while they create (a seeded moment after the first new NIC
    appears): every VM, NIC, public IP and disk in the group is for a machine the store knows; cycles that run to
    their end take over within the limit and leave no NIC, IP or disk without its VM."""
    conf = write(tmp_path, arm, limit=60, extra="create_workers = 4\nrequest_timeout_seconds = 2",
                 space="public_ip = true\norphan_seconds = 1\napi_timeout_seconds = 5")
    chance = random.Random(19)
    partial = 0
    for _ in range(5):
        run_killed(conf, arm, chance.uniform(0.0, 0.05))
        names = known(tmp_path)
        found = machines_of(arm)
        for kind, machines in found.items():
            assert machines <= names, (kind, machines - names)
        partial += len(found["vm"]) < 60
    assert partial  # the kills landed while machines were being made
    time.sleep(2.1)  # the killed runs' unconfirmed creates time out (request_timeout_seconds)
    for _ in range(3):
        run_killed(conf)
        time.sleep(1.1)
    arm.settle()
    found = machines_of(arm)
    assert found["vm"] <= known(tmp_path) and 0 < len(found["vm"]) <= 60
    assert found["nic"] == found["ip"] == found["disk"] == found["vm"], found
