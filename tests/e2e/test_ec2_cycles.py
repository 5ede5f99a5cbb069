"""`vcycle cycle --once` against an EC2 space on moto's server, as a site would run it from cron."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from vcycle.core.states import MachineState
from vcycle.store import Store


def ec2(moto_url: str) -> Any:
    return boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def instances(moto_url: str, space: str, states: tuple[str, ...] = ("pending", "running", "stopped")) -> list[Any]:
    pages = ec2(moto_url).describe_instances(Filters=[{"Name": "tag:vcycle-space", "Values": [space]},
                                                      {"Name": "instance-state-name", "Values": list(states)}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


@pytest.fixture
def site(tmp_path: Path, moto_url: str, moto_ami: str) -> dict[str, Any]:
    space = f"ec2-{uuid.uuid4().hex[:6]}.example.org"
    demand = tmp_path / "demand.json"
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""
[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = cron-host
max_create_fraction = 1
request_timeout_seconds = 2

[demand queue]
type = file
path = {demand}

[space {space}]
api = ec2
url = {moto_url}
region = us-east-1
access_key = testing
secret_key = testing
processors_limit = 8

[machinetype {space} pilot]
root_image = image:{moto_ami}
flavor_names = t3.micro
min_processors = 2
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
user_data = pilot-container
demand = queue
jobs_per_machine = 2
""")
    return {"space": space, "conf": conf, "demand": demand, "tmp": tmp_path}


def set_demand(site: dict[str, Any], idle: int) -> None:
    site["demand"].write_text(json.dumps({site["space"]: {"pilot": {"idle_jobs": idle, "running_jobs": 0}}}))


def cycle(site: dict[str, Any], kill_after: float | None = None) -> subprocess.CompletedProcess[str] | None:
    argv = [sys.executable, "-m", "vcycle.cli", "cycle", "--once", "--config", str(site["conf"])]
    if kill_after is None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert "Traceback" not in done.stderr, done.stderr
        return done
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(kill_after)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    return None


def test_cycles_fill_to_the_limit_with_tagged_instances_and_rendered_user_data(site: dict[str, Any],
                                                                             moto_url: str) -> None:
    set_demand(site, 20)  # 20 jobs / 2 per machine = 10 machines wanted; the limit allows 4
    for _ in range(3):
        done = cycle(site)
        assert done is not None and done.returncode == 0, done.stderr if done else ""
    found = instances(moto_url, site["space"])
    assert len(found) == 4 and {i["InstanceType"] for i in found} == {"t3.micro"}
    for instance in found:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags["vcycle-space"] == site["space"] and tags["vcycle-machinetype"] == "pilot"
        assert tags["vcycle-manager"] == "cron-host" and len(tags["vcycle-request"]) == 32
        user_data = ec2(moto_url).describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
        text = base64.b64decode(user_data["UserData"]["Value"]).decode()
        assert f"/machines/{site['space']}/{tags['Name']}/machinefeatures" in text
        assert "##user_data_" not in text


def test_no_demand_and_stopped_instances_lead_to_termination(site: dict[str, Any], moto_url: str) -> None:
    set_demand(site, 4)
    cycle(site)
    ids = [i["InstanceId"] for i in instances(moto_url, site["space"])]
    assert len(ids) == 2
    set_demand(site, 0)
    ec2(moto_url).stop_instances(InstanceIds=ids)
    done = cycle(site)
    assert done is not None and "2 deleted" in done.stdout
    assert instances(moto_url, site["space"]) == []
    gone = instances(moto_url, site["space"], ("terminated", "shutting-down"))
    assert sorted(i["InstanceId"] for i in gone) == sorted(ids)
    store = Store.open(f"sqlite:///{site['tmp']}/state.db")
    assert all(r.state is MachineState.DELETING for r in store.load(site["space"]).records)
    store.close()


@pytest.mark.slow
def test_sigkill_between_intent_and_create_leaks_nothing(site: dict[str, Any], moto_url: str) -> None:
    set_demand(site, 100)
    rng = random.Random(7)
    for _ in range(12):
        cycle(site, kill_after=rng.uniform(0.6, 2.0))
        assert sum(2 for _ in instances(moto_url, site["space"])) <= 8
    time.sleep(2.1)  # past request_timeout_seconds
    for _ in range(2):
        cycle(site)
    store = Store.open(f"sqlite:///{site['tmp']}/state.db")
    known = {r.name for r in store.load(site["space"]).records if r.state is not MachineState.GONE}
    store.close()
    tagged = {next(t["Value"] for t in i["Tags"] if t["Key"] == "Name") for i in instances(moto_url, site["space"])}
    assert tagged <= known  # every instance vcycle made is in its store: nothing leaked
    assert len(tagged) == 4


def test_an_instance_type_the_region_lacks_is_held_and_never_wedges_the_space(
        site: dict[str, Any], moto_url: str, moto_ami: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """flavor_names = x9.superlarge: nothing is created (the reason is in plan), and an instance of a type
    DescribeInstanceTypes does not know (made by hand, or before the region dropped it) neither fails the
    listing nor escapes vcycle's delete."""
    import moto.settings

    conf = site["conf"]
    conf.write_text(conf.read_text().replace("flavor_names = t3.micro", "flavor_names = x9.superlarge"))
    set_demand(site, 20)
    done = cycle(site)
    assert done is not None and done.returncode == 0 and "0 created" in done.stdout, done.stderr
    plan = subprocess.run([sys.executable, "-m", "vcycle.cli", "plan", "--config", str(conf)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert "hold pilot: no flavor has 2.. processors (vcpus: x9.superlarge=not in cloud)" in plan.stdout, plan.stdout
    assert instances(moto_url, site["space"]) == []

    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", False)
    made = ec2(moto_url).run_instances(
        ImageId=moto_ami, InstanceType="x9.superlarge", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "Name", "Value": "vcycle-pilot-handmade01"}, {"Key": "vcycle-space", "Value": site["space"]},
            {"Key": "vcycle-machinetype", "Value": "pilot"}, {"Key": "vcycle-manager", "Value": "cron-host"},
            {"Key": "vcycle-request", "Value": "0" * 32}]}])
    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    instance_id = made["Instances"][0]["InstanceId"]
    for _ in range(2):
        done = cycle(site)
        assert done is not None and done.returncode == 0, done.stdout + done.stderr  # the listing survives
    deleted = subprocess.run([sys.executable, "-m", "vcycle.cli", "machines", "delete", "vcycle-pilot-handmade01",
                              "--config", str(conf)], capture_output=True, text=True, timeout=120, check=False)
    assert deleted.returncode == 0, deleted.stderr
    done = cycle(site)
    assert done is not None and "1 deleted" in done.stdout, done.stdout + done.stderr
    gone = instances(moto_url, site["space"], ("terminated", "shutting-down"))
    assert [i["InstanceId"] for i in gone] == [instance_id]


def test_a_new_ami_rolls_every_instance_one_at_a_time_never_terminating_a_running_one(
        site: dict[str, Any], moto_url: str, moto_ami: str) -> None:
    """Drift on moto's EC2: the machinetype's root_image changes to another AMI while two instances run pilots
    (no heartbeat_file, so running is ready). Each cycle: a current instance is made first, then one old one
    drained (its pilot told to end; here it powers off, as the shipped templates do), and only the stopped
    one is terminated. In the end every instance runs the new AMI, and at most one was draining at any time."""
    client = ec2(moto_url)
    set_demand(site, 4)
    cycle(site)
    old = {i["InstanceId"] for i in instances(moto_url, site["space"])}
    assert len(old) == 2
    site["demand"].write_text(json.dumps({site["space"]: {"pilot": {"idle_jobs": 0, "running_jobs": 4}}}))
    disks = [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20}}]
    newer = client.register_image(Name=f"cernvm-{uuid.uuid4().hex[:6]}", RootDeviceName="/dev/xvda",
                                  BlockDeviceMappings=disks)["ImageId"]
    conf = site["conf"]
    conf.write_text(conf.read_text().replace(f"root_image = image:{moto_ami}", f"root_image = image:{newer}"))
    status = subprocess.run([sys.executable, "-m", "vcycle.cli", "status", "--json", "--config", str(conf)],
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(status.stdout)["spaces"][site["space"]]["drifted"] == {"pilot": {"machines": 2, "image": 2}}
    store = Store.open(f"sqlite:///{site['tmp']}/state.db")
    most_draining = 0
    for _ in range(12):
        done = cycle(site)
        assert done is not None and done.returncode == 0, done.stderr
        records = store.load(site["space"]).records
        draining = [r for r in records if r.state is MachineState.DRAINING]
        most_draining = max(most_draining, len(draining))
        if draining:
            client.stop_instances(InstanceIds=[r.cloud_id for r in draining])  # the pilot ends, the VM powers off
        live = instances(moto_url, site["space"])
        if not {i["InstanceId"] for i in live} & old:
            break
    store.close()
    live = instances(moto_url, site["space"], ("pending", "running"))
    assert {i["ImageId"] for i in live} == {newer} and len(live) >= 2
    for instance in instances(moto_url, site["space"], ("terminated", "shutting-down")):
        assert instance["InstanceId"] in old  # only old ones went, each after it stopped
    assert most_draining == 1
