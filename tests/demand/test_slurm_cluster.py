"""The Slurm source against a real Slurm 22.05 on this machine (scripts/slurm_testbed.py: munged, slurmctld and a
slurmd per node from Debian's packages): real jobs of several shapes in two partitions, held and dependent
ones, the demand equal to what squeue shows pending; nodes registered and drained; an unreachable controller."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from vcycle.config import load_config
from vcycle.core.model import JobShape
from vcycle.demand import make_source
from vcycle.demand.slurm import COUNTED, SlurmDemand
from vcycle.errors import DemandError


def config(tmp_path: Path, testbed: Any, extra: str = "") -> Any:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_dir = {tmp_path}

[space here]
api = fake

[demand cluster]
type = slurm
slurm_conf = {testbed.conf}
timeout_seconds = 10
{extra}

[machinetype here main]
demand = cluster
slurm_partition = main
slurm_constraint = cpu avx2
min_processors = 4
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
user_data = slurm-worker
max_wallclock_seconds = 259200

[machinetype here gpu]
demand = cluster
slurm_partition = gpu
slurm_gpus = 1
min_processors = 2
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
user_data = slurm-worker
max_wallclock_seconds = 259200
""")
    return load_config([conf])


def source(tmp_path: Path, testbed: Any, extra: str = "") -> SlurmDemand:
    loaded = config(tmp_path, testbed, extra)
    made = make_source(loaded.demands["cluster"], loaded.spaces)
    assert isinstance(made, SlurmDemand)
    return made


def settle(testbed: Any, running: int = 0) -> None:
    """Until a scheduler pass has looked at every job (none pending with reason None) and ``running`` of them run
    (the nodes a test before freed may still be completing its jobs)."""
    deadline = time.monotonic() + 30

    def unsettled() -> bool:
        jobs = testbed.jobs()
        return (any(j["job_state"] == "PENDING" and j["state_reason"] == "None" for j in jobs)
                or sum(j["job_state"] == "RUNNING" for j in jobs) < running)

    while unsettled():
        assert time.monotonic() < deadline, "the scheduler did not look at the jobs"
        time.sleep(0.2)


@pytest.fixture
def cluster(slurm_testbed: Any) -> Any:
    slurm_testbed.clear()
    yield slurm_testbed
    slurm_testbed.clear()
    for node in ("c1", "c2", "g1"):
        slurm_testbed.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)


def test_demand_is_what_squeue_shows_pending_for_resources(cluster: Any, tmp_path: Path) -> None:
    sbatch = cluster.sbatch
    running = [sbatch("-c", "4"), sbatch("-c", "4")]  # c1 and c2 full
    sbatch("-c", "4")  # Resources
    sbatch("-c", "2", "--mem=3000")  # Priority
    sbatch("--hold")
    sbatch(f"--dependency=afterok:{running[0]}")
    sbatch("-p", "gpu", "--gres=gpu:1", "-c", "2")
    sbatch("-p", "gpu", "--gres=gpu:1", "-c", "2")
    sbatch("-p", "gpu", "--gres=gpu:1", "-c", "2")  # g1 has two GPUs: Resources
    sbatch("-p", "gpu", "--gres=gpu:2", "-c", "1")  # more GPUs than a gpu machine has
    settle(cluster, running=4)  # c1, c2 and two GPU jobs on g1
    found = source(tmp_path, cluster).demand("here")
    assert found["main"].shapes == (JobShape(2, 3000, 0, 1), JobShape(4, 4000, 0, 1))
    assert found["gpu"].shapes == (JobShape(2, 2000, 0, 1),)
    assert "1 pending job nodes not counted: they ask for more GPUs per node than slurm_gpus" in found["gpu"].reason
    # the same jobs as squeue's own text output says are pending for a counted reason
    shown = [line.split("|") for line in cluster.run("squeue", "-h", "-t", "PD", "-o", "%i|%P|%r|%b").splitlines()]
    counted = [(p, b) for _, p, r, b in shown if r in COUNTED]
    assert sorted(counted) == sorted([("main", "N/A"), ("main", "N/A"), ("gpu", "gres:gpu:1"),
                                      ("gpu", "gres:gpu:2")])
    assert found["main"].idle_jobs + found["gpu"].idle_jobs == len(counted) - 1  # less the 2-GPU job


def test_min_idle_seconds_and_partitions(cluster: Any, tmp_path: Path) -> None:
    cluster.sbatch("-c", "4")
    cluster.sbatch("-c", "4")
    cluster.sbatch("-c", "4")
    settle(cluster, running=2)
    assert source(tmp_path, cluster, "min_idle_seconds = 3600").demand("here")["main"].idle_jobs == 0
    assert source(tmp_path, cluster, "partitions = gpu").demand("here")["main"].idle_jobs == 0
    assert source(tmp_path, cluster).demand("here")["main"].idle_jobs == 1


def test_nodes_registered_busy_and_drained(cluster: Any, tmp_path: Path) -> None:
    made = source(tmp_path, cluster)
    cluster.sbatch("-c", "4")
    deadline = time.monotonic() + 30
    while not any(made.registered("here").values()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    seen = made.registered("here")
    assert set(seen) >= {"c1", "c2", "g1"} and sum(seen.values()) == 1
    assert "late1" not in seen and "cl1" not in seen  # never started; powered down
    idle = next(name for name in ("c1", "c2") if not seen[name])
    made.drain("here", idle)
    node = cluster.nodes()[idle]
    assert "DRAIN" in node["state_flags"] and node["reason"] == "vcycle: retiring machine"
    assert idle not in made.registered("here")  # drained, nothing running: done


def test_an_unreachable_controller_makes_the_demand_unknown(cluster: Any, tmp_path: Path) -> None:
    text = cluster.conf.read_text()
    port = cluster.ports["slurmctld"]
    dead = tmp_path / "slurm.conf"
    dead.write_text(text.replace(f"SlurmctldPort={port}", "SlurmctldPort=1"))
    loaded = config(tmp_path, cluster)
    options = loaded.demands["cluster"].options
    import dataclasses

    made = make_source(dataclasses.replace(loaded.demands["cluster"],
                                           options=dataclasses.replace(options, slurm_conf=str(dead))), loaded.spaces)
    started = time.monotonic()
    with pytest.raises(DemandError, match=r"squeue: Failed while looking for jobs .*is slurmctld up and reachable"):
        made.demand("here")
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("expression", ["cl[1-3]", "gpu[08-10],c1", "r[1-2]n[1-2]", "cl[1-2,5]"])
def test_hostlists_expand_as_scontrol_expands_them(cluster: Any, expression: str) -> None:
    from vcycle.demand.slurm import hostnames

    assert hostnames(expression) == cluster.run("scontrol", "show", "hostnames", expression).split()


def rest_source(tmp_path: Path, cluster: Any, token: str) -> SlurmDemand:
    if "AuthAltTypes" not in cluster.conf.read_text():  # the testbed starts slurmrestd where it is installed
        from vctest import unavailable

        unavailable("slurmrestd", "Debian's slurmrestd and slurm-wlm-jwt-plugin are not installed (make services)")
    (tmp_path / "token").write_text(f"SLURM_JWT={token}\n")
    return source(tmp_path, cluster, f"method = rest\nrest_url = {cluster.rest_url}\nrest_user = root\n"
                                     f"rest_token_file = {tmp_path / 'token'}")


def test_slurmrestd_gives_the_same_demand_and_nodes_as_the_commands(cluster: Any, tmp_path: Path) -> None:
    cluster.sbatch("-c", "4")
    cluster.sbatch("-c", "4")
    cluster.sbatch("-c", "4")
    cluster.sbatch("-c", "2", "--mem=3000")
    settle(cluster, running=2)
    rest = rest_source(tmp_path, cluster, cluster.token())
    commands = source(tmp_path, cluster)
    assert rest.demand("here") == commands.demand("here")
    assert rest.demand("here")["main"].idle_jobs == 2
    assert rest.registered("here") == commands.registered("here")


def test_slurmrestd_refusing_the_token_is_a_clear_error(cluster: Any, tmp_path: Path) -> None:
    rest = rest_source(tmp_path, cluster, "not-a-token")
    with pytest.raises(DemandError, match=r"slurmrestd at http://127\.0\.0\.1:\d+: \d+ for /jobs: .*is the token in "
                                          r".*token valid for root") as caught:
        rest.demand("here")
    assert "not-a-token" not in str(caught.value)
    (tmp_path / "token").unlink()
    with pytest.raises(DemandError, match=r"rest_token_file .*token: No such file"):
        rest.demand("here")


def test_method_rest_needs_its_keys(cluster: Any, tmp_path: Path) -> None:
    from vcycle.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        config(tmp_path, cluster, "method = rest")
    assert {p.key for p in caught.value.problems} == {"rest_url", "rest_user", "rest_token_file"}
