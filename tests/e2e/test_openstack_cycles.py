"""``vcycle cycle --once`` against a real Nova on this machine (scripts/openstack_testbed.py), as cron runs it."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from vctest import vcycle

from vcycle.testing import wait_for


@pytest.fixture
def site(openstack_testbed: Any, tmp_path: Path) -> tuple[Path, Any]:
    admin = openstack_testbed.connection(admin=True)
    for server in admin.compute.servers(all_projects=True):
        admin.compute.delete_server(server.id, ignore_missing=True)
    wait_for(lambda: not [s for s in admin.compute.servers(all_projects=True) if s.status != "DELETED"])
    keys = "\n".join(f"{k} = {v}" for k, v in openstack_testbed.space_keys().items())
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
max_create_fraction = 1

[space nova]
api = openstack
{keys}
processors_limit = 3
zones = zone-a zone-b
https_host = vcycle.example.org

[machinetype nova pilot]
root_image = image:cernvm-test
flavor_names = m1.small
user_data = pilot-container
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0
""")
    return conf, admin


def ours(admin: Any) -> list[Any]:
    return [s for s in admin.compute.servers(all_projects=True, details=True)
            if s.metadata.get("vcycle-space") == "nova" and s.status != "DELETED"]


def test_fill_tag_stop_and_replace_leaving_foreign_servers_alone(site: tuple[Path, Any], openstack_testbed: Any,
                                                                 tmp_path: Path) -> None:
    conf, admin = site
    user = openstack_testbed.connection()
    foreign = user.compute.create_server(name="not-vcycles", flavor_id=user.compute.find_flavor("m1.tiny").id,
                                         image_id=openstack_testbed.image_id, networks="none")
    done = vcycle(conf, "cycle", "--once")
    assert done.returncode == 0, done.stderr
    # the foreign server holds 1 of the 3 processors, so 2 machines fill the space
    assert len(ours(admin)) == 2
    wait_for(lambda: all(s.status == "ACTIVE" for s in ours(admin)))
    for server in ours(admin):
        full = admin.compute.get_server(server.id)
        assert full.metadata["vcycle-manager"] == "e2e" and full.metadata["machinetype"] == "pilot"
        assert full.metadata["machinefeatures"] == (f"https://vcycle.example.org:443/machines/nova/{full.name}"
                                                    "/machinefeatures")
        assert full.flavor["original_name"] == "m1.small"
        user_data = base64.b64decode(full.user_data).decode()  # read back as admin
        assert f"vcycle pilot-container: the entrypoint of machine {full.name}" in user_data
    assert sorted(s.availability_zone for s in ours(admin)) == ["zone-a", "zone-b"]  # spread over the zones
    assert vcycle(conf, "cycle", "--once").returncode == 0
    assert len(ours(admin)) == 2  # at the limit: nothing more
    stopped = ours(admin)[0]
    admin.compute.stop_server(stopped.id)
    wait_for(lambda: admin.compute.get_server(stopped.id).status == "SHUTOFF")
    assert vcycle(conf, "cycle", "--once").returncode == 0  # sees it stopped, deletes it
    wait_for(lambda: stopped.id not in {s.id for s in ours(admin)})
    assert vcycle(conf, "cycle", "--once").returncode == 0  # its place is free again
    wait_for(lambda: len(ours(admin)) == 2)
    assert admin.compute.get_server(foreign.id).status in ("ACTIVE", "BUILD")  # never touched
    history = vcycle(conf, "machines", "history", stopped.name).stdout
    assert "cloud reports stopped (SHUTOFF)" in history


def test_a_cycle_killed_midway_leaks_nothing(site: tuple[Path, Any], tmp_path: Path) -> None:
    conf, admin = site
    conf.write_text(conf.read_text().replace("processors_limit = 3", "processors_limit = 12"))
    for delay in (2.0, 2.6, 3.2):  # python and openstacksdk start in about 1.5 s; then intents, then creates
        cron = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "cycle", "--once", "--config", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        cron.send_signal(signal.SIGKILL)
        cron.wait()
    for _ in range(2):  # the next runs reconcile: adopt what the cloud has, give up what it never made
        assert vcycle(conf, "cycle", "--once").returncode in (0, 1)
    servers = {s.name for s in ours(admin)}
    db = sqlite3.connect(tmp_path / "state.db")
    known = {name for (name,) in db.execute("SELECT name FROM machines WHERE state != 'gone'")}
    assert servers <= known, f"servers not in the store: {servers - known}"
    assert len(servers) <= 12
    states = dict(db.execute("SELECT state, count(*) FROM machines GROUP BY state").fetchall())
    assert sum(states.values()) > 0, "no cycle got as far as recording an intent"


def test_a_flavor_no_host_has_room_for_cools_and_the_next_offering_takes_its_place(site: tuple[Path, Any]) -> None:
    """Real Nova accepts a server of a flavor no compute host can hold, and its scheduler puts it in ERROR with a
    NoValidHost fault: that flavor had no capacity. The machine is deleted without an abort or a failed launch,
    the flavor cools, and the machinetype's next flavor of the same size is made instead."""
    conf, admin = site
    if admin.compute.find_flavor("m1.huge") is None:  # one vCPU, and more disk than a fake hypervisor has (600 TB)
        admin.compute.create_flavor(name="m1.huge", ram=512, vcpus=1, disk=1_000_000)
    conf.write_text(conf.read_text().replace("flavor_names = m1.small", "flavor_names = m1.huge m1.small")
                    .replace("processors_limit = 3", "processors_limit = 1"))
    assert vcycle(conf, "cycle", "--once").returncode == 0
    (server,) = ours(admin)
    assert admin.compute.get_server(server.id).flavor["original_name"] == "m1.huge"
    wait_for(lambda: admin.compute.get_server(server.id).status != "BUILD", seconds=60)
    assert admin.compute.get_server(server.id).status == "ERROR"
    assert "No valid host" in admin.compute.get_server(server.id).fault["message"]
    for _ in range(3):  # sees it failed and deletes it; it is gone; the next flavor is made
        vcycle(conf, "cycle", "--once")
        time.sleep(1)
    flavors = {admin.compute.get_server(s.id).flavor["original_name"] for s in ours(admin)}
    assert flavors == {"m1.small"}
    db = sqlite3.connect(conf.parent / "state.db")
    assert db.execute("SELECT count(*) FROM backoffs").fetchone() == (0,)  # no abort
    assert db.execute("SELECT offering FROM cooldowns").fetchall() == [("m1.huge",)]
    history = vcycle(conf, "machines", "history", server.name).stdout
    assert "no capacity: the cloud could not place it on m1.huge (No valid host was found" in history
    outcomes = [o for (text,) in db.execute("SELECT outcomes FROM launches") for o in json.loads(text)]
    assert all(ok for _, _, ok, _ in outcomes)  # [machine, at, ok, reason]: no failed launch
