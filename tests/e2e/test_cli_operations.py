"""The operator's commands, run as a site admin runs them: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vcycle.core.model import CloudStatus
from vcycle.testing import FakeConnector, wait_for


def vcycle(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "v.conf"
    path.write_text(f"""
[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = ops
cycle_seconds = 1
max_create_fraction = 1

[space ops]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 3

[machinetype ops alpha]
user_data = pilot-container
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0

[machinetype ops beta]
user_data = pilot-container
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0
""")
    return path


def cloud(conf: Path) -> FakeConnector:
    return FakeConnector(state_file=str(conf.parent / "cloud.json"))


def test_cycle_status_plan_history(conf: Path) -> None:
    out = vcycle("cycle", "--once", "--config", str(conf)).stdout
    assert out.strip() == "ops: 3 created, 0 deleted, ok"
    status = json.loads(vcycle("status", "--json", "--config", str(conf)).stdout)
    space = status["spaces"]["ops"]
    assert sum(space["machinetypes"]["alpha"].values()) + sum(space["machinetypes"]["beta"].values()) == 3
    assert space["last_cycle"]["counts"]["creates"] == 3
    assert "processors_limit 3/3" in " ".join(d["reason"] for d in space["last_cycle"]["decisions"])
    table = vcycle("status", "--config", str(conf)).stdout
    assert "space ops (fake): 3/3 processors" in table and "alpha" in table
    planned = vcycle("plan", "--config", str(conf)).stdout
    assert "hold space: processors_limit 3/3" in planned and "(dry run: nothing was changed)" in planned
    name = cloud(conf).ours()[0].name
    history = vcycle("machines", "history", name, "--config", str(conf)).stdout
    assert "requested" in history and "create accepted by the cloud" in history


def test_operator_delete_and_drain(conf: Path) -> None:
    vcycle("cycle", "--once", "--config", str(conf))
    victim = cloud(conf).ours()[0].name
    said = vcycle("machines", "delete", victim, "--reason", "broken disk", "--config", str(conf)).stdout
    assert "will be deleted by the next cycle" in said
    drained = vcycle("drain", "ops", "--config", str(conf)).stdout
    assert "drained" in drained
    vcycle("cycle", "--once", "--config", str(conf))
    assert victim not in {m.name for m in cloud(conf).ours()}
    assert len(cloud(conf).ours()) == 2  # drained: the freed room is not refilled
    history = vcycle("machines", "history", victim, "--config", str(conf)).stdout
    assert "delete: operator: broken disk" in history
    vcycle("drain", "ops", "--undo", "--config", str(conf))
    vcycle("cycle", "--once", "--config", str(conf))
    vcycle("cycle", "--once", "--config", str(conf))
    assert len(cloud(conf).ours()) == 3


def test_unknown_machine_and_bad_config_are_clear_errors(conf: Path, tmp_path: Path) -> None:
    done = vcycle("machines", "history", "nope", "--config", str(conf), check=False)
    assert done.returncode == 1 and "no machine named nope" in done.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[space x]\napi = fake\n")
    done = vcycle("cycle", "--once", "--config", str(bad), check=False)
    assert done.returncode == 2 and "a space needs at least one" in done.stderr


def test_a_failing_space_makes_cycle_exit_1(conf: Path) -> None:
    (conf.parent / "cloud.json").write_text("{not json")
    done = vcycle("cycle", "--once", "--config", str(conf), check=False)
    assert done.returncode == 1 and "ops:" in done.stdout and "FAILED" in done.stdout


def test_overlapping_cron_runs_never_act_twice(conf: Path, tmp_path: Path) -> None:
    import fcntl

    with open(tmp_path / "vcycle.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = vcycle("cycle", "--once", "--config", str(conf), check=False)
    assert done.returncode == 3 and "another vcycle holds" in done.stderr
    assert not (tmp_path / "cloud.json").exists()  # nothing was done


def _start_daemon(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf),
                             "--log-file", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_daemon_cycles_reloads_on_sighup_and_stops_on_sigterm(conf: Path, tmp_path: Path) -> None:
    log = tmp_path / "vcycle.log"
    daemon = _start_daemon(conf, log)
    try:
        wait_for(lambda: len(cloud(conf).ours()) == 3)
        good = conf.read_text()
        conf.write_text(good + "\n[machinetype ops broken]\ntarget_share = lots\n")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded, keeping the old one" in log.read_text())
        conf.write_text(good.replace("processors_limit = 3", "processors_limit = 4"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text())
        wait_for(lambda: len(cloud(conf).ours()) == 4)
        running = cloud(conf)
        running.set_status(running.ours()[0].name, CloudStatus.STOPPED)
        wait_for(lambda: len(cloud(conf).ours()) == 4 and all(
            m.status is not CloudStatus.STOPPED for m in cloud(conf).ours()))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0
    assert "finishing the current cycle, then stopping" in log.read_text()
    assert daemon.stderr is not None and b"Traceback" not in daemon.stderr.read()


def test_daemon_tells_systemd_it_is_ready(conf: Path, tmp_path: Path) -> None:
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": address}
        daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--cycles", "1", "--config",
                                   str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        messages = [listener.recv(4096).decode() for _ in range(3)]
        daemon.wait(timeout=30)
    assert messages[0] == "READY=1"
    assert messages[1].startswith("WATCHDOG=1\nSTATUS=cycle 1: 1 space(s)")
    assert messages[2] == "STOPPING=1"
