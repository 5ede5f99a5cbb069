"""A spot interruption on moto's EC2, end to end: ``vcycle daemon`` with its HTTPS endpoint over TLS, an EC2
space on moto's server, a machinetype whose offerings are t3.micro then t3a.micro.

The machine reports EC2's notice as the shipped templates do (``PUT joboutputs/interruption`` with its own
token, the instance-action body unchanged; tests/userdata shows the templates' watch of the metadata service).
The daemon, cycling only every 300 s, is woken and drains the machine within seconds. EC2 then takes the
instance (terminated here through the API, as the spot service does); the next cycle records it GONE, counts
no abort, and makes its replacement on the next offering, t3a.micro, while t3.micro cools.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
from pki import PKI, grid_name

from vcycle.core.states import MachineState
from vcycle.store import Store
from vcycle.testing import free_port, wait_for


def test_a_spot_notice_drains_at_once_and_the_replacement_goes_to_the_next_offering(
        tmp_path: Path, moto_url: str, moto_ami: str) -> None:
    ec2: Any = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")
    pki = PKI.create(tmp_path / "pki")
    cert, key = pki.issue("server", grid_name(("CN", "localhost")), server=True)
    port, space = free_port(), f"spot-{uuid.uuid4().hex[:6]}.example.org"
    conf = tmp_path / "v.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
cycle_seconds = 300
max_create_fraction = 1
https_listen = 127.0.0.1:{port}
https_cert = {cert}
https_key = {key}

[space {space}]
api = ec2
url = {moto_url}
region = us-east-1
access_key = testing
secret_key = testing
processors_limit = 2
https_host = 127.0.0.1
https_port = {port}

[machinetype {space} pilot]
root_image = image:{moto_ami}
flavor_names = t3.micro t3a.micro
min_processors = 2
max_processors = 2
target_share = 1
backoff_seconds = 3600
fizzle_seconds = 3600
user_data = pilot-container
""")
    log = tmp_path / "vcycle.log"
    daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf), "--log-file",
                               str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def instances(*states: str) -> list[Any]:
        pages = ec2.describe_instances(Filters=[{"Name": "tag:vcycle-space", "Values": [space]},
                                                {"Name": "instance-state-name", "Values": list(states)}])
        return [i for r in pages["Reservations"] for i in r["Instances"]]

    try:
        wait_for(lambda: len(instances("pending", "running")) == 1, seconds=60)
        (first,) = instances("pending", "running")
        assert first["InstanceType"] == "t3.micro"
        name = {t["Key"]: t["Value"] for t in first["Tags"]}["Name"]
        user_data = base64.b64decode(ec2.describe_instance_attribute(
            InstanceId=first["InstanceId"], Attribute="userData")["UserData"]["Value"]).decode()
        found = re.search(r"^VCYCLE_TOKEN=(.+)$", user_data, re.M)
        assert found is not None
        token = shlex.split(found.group(1))[0]
        store = Store.open(f"sqlite:///{tmp_path}/state.db", readonly=True)

        def record():  # type: ignore[no-untyped-def]
            return next((r for r in store.records(space) if r.name == name), None)

        notice = {"kind": "spot", "notice": {"action": "terminate", "time": "2026-12-02T18:02:00Z"}}
        context = ssl.create_default_context(cafile=str(pki.directory / "ca.pem"))
        with httpx.Client(verify=context, base_url=f"https://127.0.0.1:{port}", timeout=30) as http:
            sent = time.monotonic()
            answer = http.put(f"/machines/{space}/{name}/joboutputs/interruption", content=json.dumps(notice),
                              headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 204, answer.text
        wait_for(lambda: record() is not None and record().state is MachineState.DRAINING, seconds=10)
        assert time.monotonic() - sent <= 10
        assert "EC2 spot interruption notice: terminate" in record().reason

        ec2.terminate_instances(InstanceIds=[first["InstanceId"]])  # the spot service takes it back
        daemon.send_signal(signal.SIGHUP)  # a cycle now rather than in 300 s
        wait_for(lambda: record().state is MachineState.GONE and len(instances("pending", "running")) == 1,
                 seconds=60)
        (replacement,) = instances("pending", "running")
        assert replacement["InstanceType"] == "t3a.micro"  # t3.micro cools after the notice
        assert "after its interruption notice" in record().reason
        assert store.load(space).backoffs == {}  # fizzle_seconds 3600: an abort, were it not an interruption
        store.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0
    assert daemon.stderr is not None and b"Traceback" not in daemon.stderr.read()
