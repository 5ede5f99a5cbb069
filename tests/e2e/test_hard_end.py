"""Machines end by themselves at their shutdown time with no manager alive: one `vcycle cycle --once` makes
them, then no vcycle runs at all.

A local space's machines are real process sessions on this host (coreutils' timeout ends them). An EC2 space's
instance is on moto's server: its rendered user-data is run here as the VM would run it, and the power-off its
hard end calls is what EC2 does when an instance's own OS shuts down: the instance is terminated or stopped as
its InstanceInitiatedShutdownBehavior says (moto keeps that attribute but runs no OS, so the test plays the VM).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from vctest import vcycle

from vcycle.connectors.local import LocalConnector
from vcycle.core.model import CloudStatus
from vcycle.core.states import MachineState
from vcycle.store import Store

WALLCLOCK = 5


def wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return bool(check())


def test_local_machines_end_at_their_shutdown_time_with_no_manager(tmp_path: Path) -> None:
    demand = tmp_path / "demand.json"
    demand.write_text(json.dumps({"here": {"pilot": {"idle_jobs": 2, "running_jobs": 0}}}))
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = gone-home
max_create_fraction = 1

[demand queue]
type = file
path = {demand}

[space here]
api = local
processors_limit = 2
https_host = 127.0.0.1
https_port = 9

[machinetype here pilot]
demand = queue
user_data = pilot-container
user_data_option_pilot_command = sleep 600
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
max_wallclock_seconds = {WALLCLOCK}
""")
    done = vcycle(conf, "cycle", "--once")
    assert done.returncode == 0, done.stderr
    local = LocalConnector("here", str(tmp_path / "local" / "here"))
    machines = local.list_machines()
    assert len(machines) == 2 and {m.status for m in machines} == {CloudStatus.RUNNING}
    # no manager from here on: each machine's own timeout ends it (the wrapper kills 10 s after its TERM)
    assert wait_for(lambda: {m.status for m in local.list_machines()} == {CloudStatus.STOPPED}, WALLCLOCK + 15)
    for machine in local.list_machines():
        status = tmp_path / "local" / "here" / machine.name / "exit-status"
        # not before its shutdown time, counted from its own creation (the cycle may take a while to exit)
        assert status.stat().st_mtime - machine.created_at.timestamp() >= WALLCLOCK - 1
        assert status.read_text().strip() == "124"  # timeout
        shutdown = (tmp_path / "local" / "here" / machine.name / "tmp" / "vcycle-shutdown-message").read_text()
        assert shutdown == "200 Reached shutdown time\n"


EC2_EMULATION = """import sys
import boto3

instance, url = sys.argv[1:]
ec2 = boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                   aws_secret_access_key="testing")
behaviour = ec2.describe_instance_attribute(InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior")
if behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate":
    ec2.terminate_instances(InstanceIds=[instance])
else:
    ec2.stop_instances(InstanceIds=[instance])
"""


def test_an_ec2_instance_terminates_itself_past_its_shutdown_time_with_no_manager(tmp_path: Path, moto_url: str,
                                                                                 moto_ami: str) -> None:
    space = f"ec2-{uuid.uuid4().hex[:6]}.example.org"
    demand = tmp_path / "demand.json"
    demand.write_text(json.dumps({space: {"pilot": {"idle_jobs": 1, "running_jobs": 0}}}))
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = gone-home
max_create_fraction = 1

[demand queue]
type = file
path = {demand}

[space {space}]
api = ec2
url = {moto_url}
region = us-east-1
access_key = testing
secret_key = testing
processors_limit = 2
https_host = 127.0.0.1
https_port = 9

[machinetype {space} pilot]
demand = queue
root_image = image:{moto_ami}
flavor_names = t3.micro
min_processors = 2
user_data = pilot-container
user_data_option_pilot_command = sleep 600
user_data_option_hard_end_seconds = 2
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
max_wallclock_seconds = {WALLCLOCK}
""")
    done = vcycle(conf, "cycle", "--once")
    assert done.returncode == 0, done.stderr
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    found = ec2.describe_instances(Filters=[{"Name": "tag:vcycle-space", "Values": [space]}])
    instance = found["Reservations"][0]["Instances"][0]["InstanceId"]
    behaviour = ec2.describe_instance_attribute(InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = ec2.describe_instance_attribute(InstanceId=instance, Attribute="userData")
    script = tmp_path / "user-data"
    script.write_bytes(base64.b64decode(user_data["UserData"]["Value"]))
    emulation = tmp_path / "ec2-shutdown.py"
    emulation.write_text(EC2_EMULATION)

    def state() -> str:
        answer = ec2.describe_instances(InstanceIds=[instance])
        return str(answer["Reservations"][0]["Instances"][0]["State"]["Name"])

    # the VM boots and runs its user-data; no vcycle runs from here on
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path),
           "VCYCLE_POWEROFF": f"{sys.executable} {emulation} {instance} {moto_url}"}
    subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=60, check=False)
    assert state() == "running"  # the pilot ended at its shutdown time; the hard end comes hard_end_seconds after
    assert wait_for(lambda: state() in ("shutting-down", "terminated"), 30)

    demand.write_text(json.dumps({space: {"pilot": {"idle_jobs": 0, "running_jobs": 0}}}))
    assert vcycle(conf, "cycle", "--once").returncode == 0  # a manager back finds it gone, and deletes nothing
    records = Store.open(f"sqlite:///{tmp_path}/state.db").records(space)
    assert [r.state for r in records] == [MachineState.GONE]
