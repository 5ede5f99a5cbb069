"""An interruption notice, end to end: the daemon with its HTTPS endpoint, the machine's own user-data (the
shipped ``pilot-container`` template) run with bash here, and a local metadata service (tests/imds.py: EC2's
documented paths and bodies, no real one can run here) that gives a spot notice while the pilot works.

The daemon cycles only every 300 s, so the machine reaching DRAINING within seconds shows the notice woke it.
Then the cloud takes the machine back: it is GONE without an abort (no backoff), and no new machine is made on
its offering while offering_cooldown_seconds run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imds
import pytest
from pki import PKI, grid_name

from vcycle.core.states import MachineState
from vcycle.store import Store
from vcycle.testing import FakeConnector, free_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="the pilot script needs bash and curl (make tools installs curl)")


def test_a_spot_notice_drains_the_machine_within_seconds_and_its_end_is_no_abort(tmp_path: Path) -> None:
    pki = PKI.create(tmp_path / "pki")
    cert, key = pki.issue("server", grid_name(("DC", "org"), ("DC", "example"), ("CN", "localhost")), server=True)
    port = free_port()
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
heartbeat_flush_seconds = 0.2

[space e2e]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 1
https_host = 127.0.0.1
https_port = {port}

[machinetype e2e pilot]
user_data = pilot-container
user_data_option_pilot_command = sleep 20
user_data_option_heartbeat_seconds = 1
target_share = 1
backoff_seconds = 600
fizzle_seconds = 3600
""")
    log = tmp_path / "vcycle.log"
    daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf), "--log-file",
                               str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cloud = FakeConnector(state_file=str(tmp_path / "cloud.json"))
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    service = imds.Metadata("ec2")
    pilot = None
    try:
        wait_for(lambda: (tmp_path / "cloud.json").exists() and len(cloud.ours()) == 1)
        machine = cloud.ours()[0].name
        saved = json.loads((tmp_path / "cloud.json").read_text())["machines"]
        script = tmp_path / "user-data.sh"
        script.write_bytes(base64.b64decode(next(m["user_data"] for m in saved if m["name"] == machine)))
        pilot = subprocess.Popen(["bash", str(script)], env={
            **os.environ, "TMPDIR": str(tmp_path), "CURL_CA_BUNDLE": str(pki.directory / "ca.pem"),
            "VCYCLE_METADATA_URL": service.url}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)  # its heartbeat and watch loops are its children: all are killed at the end
        time.sleep(1)
        threading.Timer(0, service.give_notice, ({"action": "terminate", "time": "2026-12-02T18:02:00Z"},)).start()

        def record():  # type: ignore[no-untyped-def]
            found = [r for r in store.records("e2e") if r.name == machine]  # GONE ones too
            return found[0] if found else None

        assert service.noticed.wait(30)
        noticed = time.monotonic()
        wait_for(lambda: record() is not None and record().state is MachineState.DRAINING, seconds=30)
        assert time.monotonic() - noticed < 15  # the watch asks every 5 s; the report wakes the daemon at once
        drained = record()
        assert drained.interruption == "EC2 spot interruption notice: terminate at 2026-12-02T18:02:00Z"
        assert drained.reason == f"drain: interrupted: {drained.interruption}"

        cloud.vanish(machine)  # the cloud takes it back, as it said
        daemon.send_signal(signal.SIGHUP)  # a cycle now (a reload), rather than in 300 s
        wait_for(lambda: record().state is MachineState.GONE, seconds=30)
        assert "after its interruption notice" in record().reason
        assert store.load("e2e").backoffs == {}  # fizzle_seconds 3600 would have made it an abort
        wait_for(lambda: any(d["rule"] == "offering_cooldown" for r in [store.last_reports().get("e2e", {})]
                             for d in r.get("decisions", [])), seconds=30)
        assert cloud.ours() == []  # room for one machine, and none is made on the cooled offering
    finally:
        service.close()
        if pilot is not None:
            os.killpg(pilot.pid, signal.SIGKILL)  # the script and the loops it started
            pilot.wait()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0
    assert daemon.stderr is not None and b"Traceback" not in daemon.stderr.read()
    assert "reported EC2 spot interruption notice: terminate" in log.read_text()
