"""``vcycle cycle --once`` on a Google Compute Engine space, as cron runs it: real vcycle processes through
libcloud's own GCE driver (a service account's JWT exchanged for a token, the token cached in the state
directory) to the project's fake Compute Engine v1 API on loopback HTTP (tests/fakegce.py, in this process: no
GCE emulator exists)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakegce import Gce, serve
from vctest import vcycle


@pytest.fixture
def gce(tmp_path: Path) -> Iterator[Gce]:
    yield from serve(tmp_path / "gce")


def write(tmp_path: Path, gce: Gce, limit: int) -> Path:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
max_create_fraction = 1

[space gce.example.org]
api = libcloud
driver = gce
project = {gce.project}
secret_file = {gce.key_file}
zones = europe-west4-a europe-west4-b
host = 127.0.0.1
port = {gce.port}
secure = false
processors_limit = {limit}
https_host = vcycle.example.org

[machinetype gce.example.org pilot]
root_image = image:projects/cos-cloud/global/images/family/cos-stable
flavor_names = e2-small
min_processors = 2
user_data = pilot-container
user_data_option_pilot_command = sleep 3600
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
spot = true
""")
    return conf


def test_fill_read_back_replace_a_late_failure_and_a_preempted_spot_vm(gce: Gce, tmp_path: Path) -> None:
    conf = write(tmp_path, gce, limit=6)
    assert vcycle(conf, "check-config", "--quiet").returncode == 0
    gce.fault("POST", "/instances", async_error="ZONE_RESOURCE_POOL_EXHAUSTED")
    done = vcycle(conf, "cycle", "--once")
    assert done.returncode == 0, done.stderr
    instances = dict(gce.instances)
    assert len(instances) == 3
    for instance in instances.values():
        items = {i["key"]: i["value"] for i in instance["metadata"]["items"]}
        assert items["vcycle-space"] == "gce.example.org" and items["vcycle-manager"] == "e2e"
        assert f"/machines/gce.example.org/{instance['name']}/machinefeatures" in items["user-data"]
        assert instance["scheduling"]["provisioningModel"] == "SPOT"
    assert {i["zone"].rsplit("/", 1)[1] for i in instances.values()} == {"europe-west4-a", "europe-west4-b"}
    assert (tmp_path / f"gce-token-{gce.project}.json").stat().st_mode & 0o077 == 0  # the token: for vcycle alone
    time.sleep(gce.op_seconds)
    with gce.lock:
        gce.settle()  # the late failure has taken its instance away
        victim = next(iter(gce.instances))
    gce.preempt(victim)
    # one insert failed late (it made no instance), one instance was preempted: both are replaced
    assert vcycle(conf, "cycle", "--once").returncode == 0
    assert vcycle(conf, "cycle", "--once").returncode == 0
    names = set(gce.instances)
    assert victim not in names and len(names) == 3
    failed = [n for n in set(instances) - names - {victim}]
    assert failed, instances
    history = vcycle(conf, "machines", "history", failed[0]).stdout
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in history
