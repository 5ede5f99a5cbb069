"""Slurm's own cloud mode with vcycle as its ResumeProgram and SuspendProgram, called by a real slurmctld
(scripts/slurm_testbed.py, a cluster of its own with cloud nodes cl1-cl3, State=CLOUD): a job for the cloud
partition makes slurmctld run ``vcycle slurm-resume``; vcycle's cycle creates the machine (``api = local``), whose
slurmd registers as the node; the job runs; the idle node is suspended by slurmctld through ``vcycle
slurm-suspend``, and the cycle deletes its machine. A node vcycle cannot serve is set down in Slurm."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vctest import vcycle

from vcycle.connectors.local import LocalConnector


def program(path: Path, command: str, conf: Path, log: Path) -> Path:
    """A program slurmctld runs with a hostlist as $1 (no PATH of its own, cwd its log directory)."""
    path.write_text(f"#!/bin/sh\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                    f'echo "$(date +%s.%N) {command} $1" >> {log}\n'
                    f'exec {sys.executable} -m vcycle.cli {command} "$1" --config {conf} >> {log} 2>&1\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[Any, Path, Path]]:
    import slurm_testbed

    reason = slurm_testbed.unavailable_reason()
    if reason is not None:
        from vctest import unavailable

        unavailable("real Slurm", reason)
    conf, log = tmp_path / "vcycle.conf", tmp_path / "power.log"
    testbed = slurm_testbed.start(resume=program(tmp_path / "resume", "slurm-resume", conf, log),
                                  suspend=program(tmp_path / "suspend", "slurm-suspend", conf, log),
                                  suspend_time=5, resume_timeout=60)
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
max_create_fraction = 1

[space here]
api = local
processors_limit = 8
https_host = 127.0.0.1
https_port = 9

[demand power]
type = slurm_cloud
slurm_conf = {testbed.conf}
poll_seconds = 0

[machinetype here cloud]
demand = power
slurm_cloud_nodes = cl[1-2]
min_processors = 4
user_data = slurm-worker
user_data_option_slurm_conf = {testbed.conf}
user_data_option_slurm_spool_dir = {testbed.directory}/state/%n
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
""")
    try:
        yield testbed, conf, log
    finally:
        local = LocalConnector("here", str(tmp_path / "local" / "here"), grace_seconds=2)
        for machine in local.list_machines():
            local.delete_machine(machine.id)
        testbed.stop()


def cycle_until(conf: Path, check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        assert vcycle(conf, "cycle", "--once").returncode in (0, 1)
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_slurmctld_resumes_and_suspends_cloud_nodes_through_vcycle(cloud: tuple[Any, Path, Path]) -> None:
    testbed, conf, log = cloud
    job = testbed.sbatch("-p", "cloud", "-c", "1", "-t", "10", seconds=3)

    def machines() -> list[list[str]]:
        return [line.split("\t") for line in vcycle(conf, "machines", "list").stdout.splitlines()[1:]]

    [machine] = cycle_until(conf, machines, 30)  # slurmctld ran vcycle slurm-resume; the cycle created one
    name = machine[2]
    assert "slurm-resume cl1" in log.read_text()
    state = lambda: next(j for j in testbed.jobs() if j["job_id"] == job)  # noqa: E731
    cycle_until(conf, lambda: state()["job_state"] == "COMPLETED", 60)
    assert state()["nodes"] == "cl1"  # the job ran on the machine, registered as the cloud node
    # idle for SuspendTime: slurmctld runs vcycle slurm-suspend; the next cycle deletes the machine
    cycle_until(conf, lambda: "gone" in vcycle(conf, "machines", "history", name).stdout, 90)
    assert "slurm-suspend cl1" in log.read_text()
    history = vcycle(conf, "machines", "history", name).stdout
    assert "runs pilot stamp cl1" in history and "suspended by slurmctld (SuspendProgram)" in history


def test_a_node_vcycle_has_no_machinetype_for_is_set_down_with_the_reason(cloud: tuple[Any, Path, Path]) -> None:
    testbed, conf, _ = cloud
    done = vcycle(conf, "slurm-resume", "cl[2-3]")
    assert done.returncode == 1
    assert "cl3: no machinetype has it in slurm_cloud_nodes: set down in Slurm" in done.stderr
    node = testbed.nodes()["cl3"]
    assert "down" in node["state"] or "DOWN" in node["state_flags"]
    assert node["reason"] == "vcycle: no machinetype has it in slurm_cloud_nodes"
    assert vcycle(conf, "slurm-resume", "cl2").returncode == 0  # already asked for: no second machine
    assert len(vcycle(conf, "plan").stdout.splitlines()) >= 1
    assert vcycle(conf, "cycle", "--once").returncode in (0, 1)
    assert len(vcycle(conf, "machines", "list").stdout.splitlines()[1:]) == 1


def test_a_resumed_node_that_gets_no_machine_in_time_is_set_down(cloud: tuple[Any, Path, Path]) -> None:
    testbed, conf, _ = cloud
    text = conf.read_text().replace("processors_limit = 8", "processors_limit = 0")
    conf.write_text(text.replace("poll_seconds = 0", "poll_seconds = 0\nrequest_timeout_seconds = 1"))
    assert vcycle(conf, "slurm-resume", "cl1").returncode == 0
    time.sleep(1.5)
    assert vcycle(conf, "cycle", "--once").returncode in (0, 1)
    node = testbed.nodes()["cl1"]
    assert node["reason"] == "vcycle: no machine within 1s"
    assert vcycle(conf, "machines", "list").stdout.splitlines()[1:] == []
