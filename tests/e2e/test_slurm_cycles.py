"""``vcycle cycle --once`` with demand from a real Slurm 22.05 (scripts/slurm_testbed.py) and machines that are
process sessions on this host (``api = local``) running the shipped ``slurm-worker`` template: each machine's
slurmd joins the cluster as a dynamic node named after it, runs the pending job, and is drained and retired
through Slurm when idle beyond the demand; a machine whose slurmd never registers is deleted as an abort."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from vctest import vcycle

from vcycle.connectors.local import LocalConnector


def write(tmp_path: Path, testbed: Any, machinetype: str) -> Path:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = e2e
max_create_fraction = 1

[space here]
api = local
processors_limit = 2
https_host = 127.0.0.1
https_port = 9

[demand cluster]
type = slurm
slurm_conf = {testbed.conf}
partitions = dyn
timeout_seconds = 10

[machinetype here worker]
demand = cluster
min_processors = 2
mb_per_processor = 1000
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0
retire_idle_seconds = 2
retire_after_create_seconds = 0
{machinetype}
""")
    return conf


@pytest.fixture
def cluster(slurm_testbed: Any, tmp_path: Path) -> Any:
    slurm_testbed.clear()
    yield slurm_testbed
    slurm_testbed.clear()
    local = LocalConnector("here", str(tmp_path / "local" / "here"), grace_seconds=2)
    for machine in local.list_machines():
        local.delete_machine(machine.id)


def until(check: Any, seconds: float = 60, every: float = 0.5) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def test_a_machine_joins_as_a_node_runs_the_job_and_is_retired_through_slurm(cluster: Any, tmp_path: Path) -> None:
    conf = write(tmp_path, cluster, f"""user_data = slurm-worker
user_data_option_slurm_conf = {cluster.conf}
user_data_option_slurm_features = dyn
user_data_option_slurm_spool_dir = {cluster.directory}/state/%n
register_timeout_seconds = 20""")
    job = cluster.sbatch("-p", "dyn", "-c", "2", "--mem=1000", "-t", "10", seconds=4)
    assert vcycle(conf, "cycle", "--once").returncode == 0
    [name] = [line.split("\t")[2] for line in vcycle(conf, "machines", "list").stdout.splitlines()[1:]]
    node = until(lambda: cluster.nodes().get(name))  # its slurmd joined as a node named after the machine
    assert "dyn" in node["features"] and node["cpus"] == 2 and node["real_memory"] == 2000
    until(lambda: next((j for j in cluster.jobs() if j["job_id"] == job), {}).get("job_state") == "COMPLETED")
    assert next(j for j in cluster.jobs() if j["job_id"] == job)["nodes"] == name
    # idle beyond the demand (none): drained through Slurm, deleted once drained, the node gone from Slurm
    until(lambda: vcycle(conf, "cycle", "--once") and "gone" in vcycle(conf, "machines", "history", name).stdout,
          seconds=60, every=1)
    history = vcycle(conf, "machines", "history", name).stdout
    assert "draining" in history and "its batch daemon has had no work" in history
    assert "drained: its batch daemon has finished and left" in history
    until(lambda: name not in cluster.nodes(), seconds=30)


def test_a_machine_whose_slurmd_never_registers_is_deleted_as_an_abort(cluster: Any, tmp_path: Path) -> None:
    conf = write(tmp_path, cluster, """user_data = pilot-container
user_data_option_pilot_command = sleep 600
register_timeout_seconds = 2""")
    cluster.sbatch("-p", "dyn", "-c", "2", "-t", "10")
    assert vcycle(conf, "cycle", "--once").returncode == 0
    [name] = [line.split("\t")[2] for line in vcycle(conf, "machines", "list").stdout.splitlines()[1:]]
    until(lambda: vcycle(conf, "cycle", "--once") and "deleting" in vcycle(conf, "machines", "history", name).stdout,
          seconds=30, every=1)
    assert "its batch daemon has not registered" in vcycle(conf, "machines", "history", name).stdout
    assert "500 Batch daemon did not register" in vcycle(conf, "status").stdout  # an abort: the backoff says why


def test_vcycle_drain_drains_the_machines_node_through_slurm(cluster: Any, tmp_path: Path) -> None:
    conf = write(tmp_path, cluster, f"""user_data = slurm-worker
user_data_option_slurm_conf = {cluster.conf}
user_data_option_slurm_features = dyn
user_data_option_slurm_spool_dir = {cluster.directory}/state/%n
retire_idle_seconds = 0""")
    job = cluster.sbatch("-p", "dyn", "-c", "2", "--mem=1000", "-t", "10", seconds=600)
    assert vcycle(conf, "cycle", "--once").returncode == 0
    [name] = [line.split("\t")[2] for line in vcycle(conf, "machines", "list").stdout.splitlines()[1:]]
    until(lambda: next((j for j in cluster.jobs() if j["job_id"] == job), {}).get("job_state") == "RUNNING")
    assert vcycle(conf, "cycle", "--once").returncode == 0  # registered, busy
    assert vcycle(conf, "drain", "here", "worker").returncode == 0
    assert vcycle(conf, "cycle", "--once").returncode == 0
    node = cluster.nodes()[name]
    assert "DRAIN" in node["state_flags"] and node["reason"] == "vcycle: retiring machine"
    assert next(j for j in cluster.jobs() if j["job_id"] == job)["job_state"] == "RUNNING"  # its job goes on
    cluster.run("scancel", str(job))
    until(lambda: vcycle(conf, "cycle", "--once") and "gone" in vcycle(conf, "machines", "history", name).stdout,
          seconds=60, every=1)
