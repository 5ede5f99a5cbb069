"""The Slurm source's pure parts, on documents recorded from a real Slurm 22.05 on this machine
(tests/demand/slurm-squeue.json and slurm-sinfo.json, written by scripts/slurm/record.py from
scripts/slurm_testbed.py's cluster: the jobs and nodes it names), and on rows of its tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vcycle.core.model import JobShape
from vcycle.demand.slurm import (
    REASONS,
    Cluster,
    Served,
    counted_reason,
    demand_for,
    gpus_per_node,
    node_shape,
    node_state,
    pending,
    satisfied,
    tasks,
)
from vcycle.errors import DemandError

HERE = Path(__file__).parent
SQUEUE = json.loads((HERE / "slurm-squeue.json").read_text())
SINFO = json.loads((HERE / "slurm-sinfo.json").read_text())
JOBS = {job["name"]: job for job in SQUEUE["jobs"]}
NOW = datetime.fromtimestamp(max(j["submit_time"] for j in SQUEUE["jobs"]) + 60, UTC)
MAIN = Served(frozenset({"main"}), ("cpu", "avx2"), 0, 2880.0)
GPU = Served(frozenset({"gpu"}), ("gpu",), 1, 1440.0)
DYN = Served(frozenset({"dyn"}), ("dyn",), 0, 1440.0)

# reason -> counted as demand
REASON_ROWS = [("Resources", True), ("Priority", True), ("None", True), ("ReqNodeNotAvail", True),
               ("BadConstraints", True), ("PartitionConfig", True), ("NodeDown", True),
               ("JobHeldUser", False), ("JobHeldAdmin", False), ("Dependency", False),
               ("DependencyNeverSatisfied", False), ("BeginTime", False), ("JobArrayTaskLimit", False),
               ("QOSMaxJobsPerUserLimit", False), ("AssocGrpCpuLimit", False), ("PartitionTimeLimit", False),
               ("PartitionDown", False), ("Reservation", False), ("Licenses", False),
               ("SomethingSlurmAddsLater", False)]


@pytest.mark.parametrize(("reason", "counted"), REASON_ROWS, ids=[r[0] for r in REASON_ROWS])
def test_reason_table(reason: str, counted: bool) -> None:
    assert counted_reason(reason) is counted


def test_every_reason_of_the_recording_is_in_the_table() -> None:
    assert {j["state_reason"] for j in SQUEUE["jobs"]} <= set(REASONS)


def test_the_recorded_jobs_that_are_demand() -> None:
    found = {j["name"] for j in pending(SQUEUE["jobs"], (), NOW, 0)}
    assert found == {"running2", "resources", "priority-mem", "array", "gpu-two", "late-feature", "dyn-small",
                     "dyn-two-nodes", "dyn-long"}
    assert {j["name"] for j in pending(SQUEUE["jobs"], ("gpu", "dyn"), NOW, 0)} == {
        "gpu-two", "dyn-small", "dyn-two-nodes", "dyn-long"}
    assert pending(SQUEUE["jobs"], (), NOW, 3600) == []  # none pending for an hour yet


def test_demand_by_machinetype_from_the_recording() -> None:
    jobs = pending(SQUEUE["jobs"], (), NOW, 0)
    found = demand_for(jobs, {"main": MAIN, "gpu": GPU, "dyn": DYN})
    # main: two 4-CPU jobs (1000 MB per CPU by DefMemPerCPU), one 2-CPU --mem=3000, an array of 10 tasks at most
    # 3 at once; the job asking for feature late is not served by nodes with cpu,avx2
    assert found["main"].shapes == (JobShape(1, 1000, 0, 3), JobShape(2, 3000, 0, 1), JobShape(4, 4000, 0, 2))
    assert found["main"].idle_jobs == 6
    assert found["gpu"].idle_jobs == 0  # it asks for 2 GPUs per node, the machines have 1
    assert "1 pending job nodes not counted: they ask for more GPUs per node than slurm_gpus" in found["gpu"].reason
    # dyn: 2 CPUs x 500 MB per CPU; two nodes of 4 CPUs with 2000 MB of --tmp each; a 2-day job over the 1-day
    # wallclock of the machines is not counted
    assert found["dyn"].shapes == (JobShape(2, 1000, 0, 1), JobShape(4, 4000, 2000 * 1024, 2))
    assert "have a time limit over max_wallclock_seconds" in found["dyn"].reason


def test_a_job_is_counted_once_per_space_for_the_first_machinetype_that_serves_it() -> None:
    job = {**JOBS["resources"], "partition": "gpu,main", "job_state": "PENDING", "state_reason": "Resources"}
    found = demand_for([job], {"a-main": MAIN, "b-any": Served(frozenset(), (), 0, 99999.0)})
    assert (found["a-main"].idle_jobs, found["b-any"].idle_jobs) == (1, 0)


@pytest.mark.parametrize(("array", "count"), [("", 1), (None, 1), ("1-1000", 1000), ("1-10%3", 3),
                                              ("1,3,5-7", 5), ("1-9:2", 5), ("4-10%3", 3), ("junk", 1)])
def test_array_tasks(array: str | None, count: int) -> None:
    assert tasks(array) == count


@pytest.mark.parametrize(("fields", "gpus"), [
    ({}, 0), ({"tres_per_node": "gres:gpu:1"}, 1), ({"tres_per_node": "gres:gpu:fake:2"}, 2),
    ({"tres_per_node": "gres/gpu:3"}, 3), ({"tres_per_job": "gres:gpu:4", "node_count": 2}, 2),
    ({"tres_per_task": "gres:gpu:1", "tasks": 4, "node_count": 2}, 2), ({"tres_per_node": "gres:mps:100"}, 0),
])
def test_gpus_per_node(fields: dict[str, Any], gpus: int) -> None:
    assert gpus_per_node(fields) == gpus


def test_node_shapes() -> None:
    assert node_shape(JOBS["priority-mem"]) == (2, 3000, 0)  # --mem is per node
    assert node_shape(JOBS["dyn-small"]) == (2, 1000, 0)  # --mem-per-cpu times its CPUs
    assert node_shape(JOBS["dyn-two-nodes"]) == (4, 4000, 2000 * 1024)
    assert node_shape({"cpus": 8, "node_count": 2}) == (4, 0, 0)


@pytest.mark.parametrize(("constraint", "features", "ok"), [
    ("", (), True), (None, ("a",), True), ("late", ("cpu", "late"), True), ("late", ("cpu",), False),
    ("a&b", ("a", "b"), True), ("a&b", ("a",), False), ("a,b", ("b", "a"), True), ("a|b", ("b",), True),
    ("[a*2&b]", ("a", "b"), False),
])
def test_constraints(constraint: str | None, features: tuple[str, ...], ok: bool) -> None:
    assert satisfied(constraint, features) is ok


def test_node_states_of_the_recording() -> None:
    nodes = {n["name"]: node_state(n) for n in SINFO["nodes"]}
    assert nodes["c1"] == (True, True)  # allocated
    assert nodes["g1"] == (True, True)  # mixed: one GPU job
    assert nodes["c2"] == (False, False)  # drained: done
    assert nodes["late1"] == (False, False)  # declared, never started
    assert nodes["cl1"] == (False, False)  # a cloud node powered down


@pytest.mark.parametrize(("node", "expected"), [
    ({"state": "idle", "state_flags": []}, (True, False)),
    ({"state": "mixed", "alloc_cpus": 2}, (True, True)),
    ({"state": "allocated", "state_flags": ["DRAIN"], "alloc_cpus": 4}, (True, True)),  # draining: still working
    ({"state": "idle", "state_flags": ["DRAIN"]}, (False, False)),  # drained
    ({"state": "idle", "state_flags": ["NOT_RESPONDING"]}, (False, False)),
    ({"state": "down", "state_flags": ["NOT_RESPONDING"]}, (False, False)),
    ({"state": "idle", "state_flags": ["DYNAMIC_NORM"]}, (True, False)),
])
def test_node_state_rows(node: dict[str, Any], expected: tuple[bool, bool]) -> None:
    assert node_state(node) == expected


def test_commands_that_fail_are_demand_errors_saying_why() -> None:
    def runner(text: str) -> Any:
        return lambda command, timeout: text

    with pytest.raises(DemandError, match="not the document Slurm writes"):
        Cluster(runner=runner("squeue: error: something")).jobs()
    with pytest.raises(DemandError, match=r"squeue: Invalid user \(is slurmctld up"):
        Cluster(runner=runner(json.dumps({"jobs": [], "errors": ["Invalid user"]}))).jobs()
    with pytest.raises(DemandError, match="no-such-squeue not found"):
        Cluster()._run(["no-such-squeue", "--json"], 5)
    with pytest.raises(DemandError, match=r"did not answer within 0\.2 s"):
        Cluster()._run(["sleep", "5"], 0.2)
    with pytest.raises(DemandError, match="exited with status 1"):
        Cluster()._run(["false"], 5)


def test_a_munge_key_in_the_configuration_is_masked() -> None:
    from vcycle.core.options import looks_secret

    assert looks_secret("user_data_option_munge_key_base64")
    assert not looks_secret("user_data_option_slurm_features")


@pytest.mark.parametrize(("expression", "names"), [
    ("cl1", ["cl1"]), ("cl[1-3]", ["cl1", "cl2", "cl3"]), ("cl[1-2,5]", ["cl1", "cl2", "cl5"]),
    ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]), ("a,b[1-2]", ["a", "b1", "b2"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]), ("", []),
])
def test_hostlists(expression: str, names: list[str]) -> None:
    from vcycle.demand.slurm import hostnames

    assert hostnames(expression) == names


def test_a_bad_hostlist_is_refused() -> None:
    from vcycle.demand.slurm import hostnames

    with pytest.raises(ValueError, match="not a Slurm hostlist"):
        hostnames("cl[a-b]")


def test_a_slurm_cloud_machinetype_needs_its_nodes_and_a_share(tmp_path: Path) -> None:
    from vcycle.config import load_config
    from vcycle.errors import ConfigError

    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_dir = {tmp_path}
[space here]
api = fake
[demand power]
type = slurm_cloud
[machinetype here cloud]
demand = power
user_data = slurm-worker
backoff_seconds = 0
fizzle_seconds = 0
[machinetype here bad]
demand = power
slurm_cloud_nodes = cl[a-b]
user_data = slurm-worker
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
""")
    with pytest.raises(ConfigError) as caught:
        load_config([conf])
    assert {(p.section, p.key) for p in caught.value.problems} == {
        ("machinetype here cloud", "slurm_cloud_nodes"), ("machinetype here cloud", "target_share"),
        ("machinetype here bad", "slurm_cloud_nodes")}
