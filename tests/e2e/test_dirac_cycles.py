"""vcycle against a real DIRAC 9 (scripts/dirac_testbed.py): task-queue demand through the real Matcher, and
the stock SiteDirector submitting pilots through the Vcycle CE (VcycleDIRAC, installed beside DIRAC).

Each test's jobs carry a tag of their own, and the CE descriptions require it, so that the jobs of other
tests in the shared testbed are never counted.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from vctest import load_text

from vcycle.connectors.base import fit_user_data
from vcycle.core.sections import Config
from vcycle.demand import make_source
from vcycle.demand.dirac import ce_description
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.store.pilots import PilotBook
from vcycle.testing import FakeClock, FakeConnector

SUBMIT = '''

directory, site, batch, jobs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
manager = user_jobs(directory)
tags = {batch, *(t for job in jobs for t in job.get("tags", []))}
wide = {"Site": sorted({job.get("site", site) for job in jobs}), "CPUTime": 10 ** 8, "RequiredTag": [batch],
        "Tag": sorted(tags | {"MultiProcessor"} | {"%dProcessors" % n for n in range(2, 17)}),
        "NumberOfProcessors": 16}
matcher = MatcherClient(useCertificates=True)
def waiting():
    found = matcher.getMatchingTaskQueues(wide)
    assert found["OK"], found
    return sum(tq["Jobs"] for tq in found["Value"].values())
before = waiting()  # jobs of this batch from an earlier run against the same testbed
for job in jobs:
    job_tags = [batch, *job.get("tags", [])]
    jdl = ('[Executable = "/bin/true"; JobType = "User"; CPUTime = %d; Site = "%s"; Tags = {%s}; '
           'NumberOfProcessors = %d;]' % (job.get("cpu", 3600), job.get("site", site),
                                         ", ".join('"%s"' % t for t in job_tags), job.get("processors", 1)))
    submitted = manager.submitJob(jdl)
    assert submitted["OK"], submitted
deadline = time.time() + 60
while waiting() < before + len(jobs):  # until the optimizers have put every job in a task queue
    if time.time() > deadline:
        raise SystemExit("jobs did not reach the task queues: %d of %d" % (waiting() - before, len(jobs)))
    time.sleep(0.2)
print(waiting())
'''

MATCH = '''
import json, sys
import DIRAC
DIRAC.initialize(require_auth=False)
from DIRAC.WorkloadManagementSystem.Client.MatcherClient import MatcherClient
matcher = MatcherClient(useCertificates=True)
answer = {}
for key, description in json.loads(sys.argv[1]).items():
    found = matcher.getMatchingTaskQueues(description)
    assert found["OK"], found
    answer[key] = sum(tq["Jobs"] for tq in found["Value"].values())
print(json.dumps(answer))
'''


def submit(testbed: Any, batch: str, jobs: list[dict[str, Any]]) -> int:
    """Submit ``jobs`` tagged ``batch`` as the test user; once all are in task queues, how many such jobs wait."""
    import dirac_testbed as recipe

    return int(testbed.run(recipe.USER_CLIENT + SUBMIT, str(testbed.directory), recipe.SITE, batch, json.dumps(jobs)))


def dirac_config(testbed: Any, tmp_path: Path, machinetypes: dict[str, dict[str, object]], *,
                 limit: int = 100) -> Config:
    d = testbed.directory
    lines = ["[settings]", "manager_name = mgr", f"state_dir = {tmp_path}", "max_create_fraction = 1",
             "[space sp]", "api = fake", "https_host = vcycle.example.org", f"processors_limit = {limit}",
             "[demand dirac]", "type = dirac",
             f"configuration = {d}/server/etc/dirac.cfg",  # the Registry: the VO of the jobs' groups
             f"matcher_url = dips://localhost:{testbed.ports['Matcher']}/WorkloadManagement/Matcher",
             f"host_cert = {d}/pki/hostcert.pem", f"host_key = {d}/pki/hostkey.pem",
             f"ca_dir = {d}/pki/certificates", "vo = vo", f"python = {testbed.python}", "timeout_seconds = 60"]
    for name, keys in machinetypes.items():
        lines += [f"[machinetype sp {name}]", "user_data = ud", "backoff_seconds = 600", "fizzle_seconds = 300",
                  "target_share = 1", "demand = dirac", *(f"{k} = {v}" for k, v in keys.items())]
    return load_text("\n".join(lines) + "\n")


def test_demand_per_machinetype_is_what_the_matcher_says_and_becomes_machines(
        dirac_testbed: Any, tmp_path: Path) -> None:
    import dirac_testbed as recipe

    batch, gpu = f"b{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
    submit(dirac_testbed, batch, [
        {"cpu": 3600}, {"cpu": 3600}, {"cpu": 400000},  # two short single-processor jobs, one long one
        {"cpu": 3600, "processors": 4},  # counts for 4 processors
        {"cpu": 3600, "tags": [gpu]}, {"cpu": 3600, "tags": [gpu]},  # only for machines offering the gpu tag
        {"cpu": 3600, "site": recipe.OTHER_SITE},  # only for the other site's machines
    ])
    common = {"dirac_site": recipe.SITE, "dirac_required_tags": batch, "dirac_tags": batch}
    config = dirac_config(dirac_testbed, tmp_path, {
        "small": common,
        "short": {**common, "dirac_max_cpu_time": 60},  # CPUTime 36000: not the 400000 one
        "gpu": {**common, "dirac_tags": f"{batch} {gpu}", "dirac_required_tags": f"{batch} {gpu}"},
        "multi": {**common, "min_processors": 4},
        "other": {**common, "dirac_site": recipe.OTHER_SITE},
        "elsewhere": {**common, "dirac_site": "LCG.Elsewhere.org"},
    })
    source = make_source(config.demands["dirac"], config.spaces)
    try:
        found = source.demand("sp")
    finally:
        source.close()  # type: ignore[attr-defined]
    mts = config.spaces["sp"].machinetypes
    matcher = json.loads(dirac_testbed.run(MATCH, json.dumps({name: ce_description(mt, "vo")
                                                              for name, mt in mts.items()})))
    jobs = {name: sum(s.count for s in (d.shapes or ())) for name, d in found.items()}
    assert jobs == matcher == {"small": 3, "short": 2, "gpu": 2, "multi": 4, "other": 1, "elsewhere": 0}
    assert found["multi"].idle_jobs == 7  # the 4-processor job counts for 4
    assert [(s.processors, s.count) for s in found["multi"].shapes or ()] == [(1, 3), (4, 1)]
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    sources = {name: make_source(d, config.spaces, store, clock) for name, d in config.demands.items()}
    try:
        report = run_cycle(SpaceContext(config, config.spaces["sp"], cloud, store, sources,
                                        lambda *a: b"#!/bin/sh\n", clock))
    finally:
        for s in sources.values():
            s.close()  # type: ignore[attr-defined]
    made: dict[str, int] = {}
    for machine in cloud.ours():
        assert machine.owner is not None
        made[machine.owner.machinetype] = made.get(machine.owner.machinetype, 0) + 1
    # the 4-processor machines: one for the 4-processor job, one for the three single ones
    assert report.ok and made == {"small": 3, "short": 2, "gpu": 2, "multi": 2, "other": 1}


def sitedirector(testbed: Any, cycles: int = 1) -> str:
    """One run of DIRAC's stock SiteDirector agent over the testbed's Vcycle CE queue; its log."""
    done = subprocess.run([str(Path(testbed.python).parent / "dirac-agent"), "WorkloadManagement/SiteDirector",
                           "-o", f"MaxCycles={cycles}", "-o", "/DIRAC/Security/UseServerCertificate=yes",
                           "-o", "LogLevel=INFO"], env=testbed.env, cwd=testbed.directory, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def pilot_agents(testbed: Any) -> dict[str, tuple[str, str]]:
    """PilotAgentsDB as the SiteDirector left it: reference -> (stamp, status)."""
    rows = subprocess.run(["mariadb", f"--socket={testbed.mysql_socket}", "-uroot", "-N", "-B",
                           "PilotAgentsDB", "-e", "SELECT PilotJobReference, PilotStamp, Status FROM PilotAgents"],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    return {ref: (stamp, status) for ref, stamp, status in (r.split("\t") for r in rows if r)}


def test_the_stock_sitedirector_submits_through_the_vcycle_ce_and_a_restart_does_not_over_submit(
        dirac_testbed: Any, tmp_path: Path) -> None:
    import dirac_testbed as recipe

    (dirac_testbed.directory / recipe.VCYCLE_CONFIG).write_text(f"""
[settings]
manager_name = mgr
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
max_create_fraction = 1
[space {recipe.SPACE}]
api = fake
processors_limit = 3
https_host = vcycle.example.org
[demand pilots]
type = sitedirector
[machinetype {recipe.SPACE} {recipe.MACHINETYPE}]
user_data = cernvm-dirac-pilot
backoff_seconds = 600
fizzle_seconds = 300
target_share = 1
demand = pilots
""")
    before = pilot_agents(dirac_testbed)
    waiting = submit(dirac_testbed, recipe.PILOT_TAG, [{"cpu": 3600}] * 5)  # 5, or more after an earlier run
    log = sitedirector(dirac_testbed)
    ours = {ref: row for ref, row in pilot_agents(dirac_testbed).items() if ref not in before}
    expected = min(waiting, 10)  # the agent's MaxPilotsToSubmit and the queue's MaxWaitingJobs are 10
    assert len(ours) == expected, log[-3000:]
    config = load_text((dirac_testbed.directory / recipe.VCYCLE_CONFIG).read_text())
    store = Store.open(config.settings.state_url)
    pending = PilotBook(store).pending(recipe.SPACE)[recipe.MACHINETYPE]
    assert {f"vcycle://{recipe.SPACE}/{p.name}": p.stamp for p in pending} == {r: s for r, (s, _) in ours.items()}
    assert all(p.wrapper.startswith("#!") and "proxy" in p.wrapper.lower() for p in pending)
    # vcycle's cycle: machines for the pilots, as many as the space holds (3 processors)
    clock = FakeClock()
    cloud = FakeConnector(clock=clock, boot_seconds=600)
    sources = {name: make_source(d, config.spaces, store, clock) for name, d in config.demands.items()}
    from vcycle.userdata.render import render_user_data

    report = run_cycle(SpaceContext(config, config.spaces[recipe.SPACE], cloud, store, sources,
                                    lambda s, mt, n, o, r, t: render_user_data(s, mt, n, o, r, t, manager="mgr"),
                                    clock))
    machines = {f"vcycle://{recipe.SPACE}/{m.name}" for m in cloud.ours()}
    assert report.ok and len(machines) == 3 and machines <= set(ours)
    # each boots the SiteDirector's own wrapper; gzipped, the user-data fits even EC2's 16 KB
    wrappers = {p.name: p.wrapper for p in pending}
    for machine in cloud.machines.values():
        files = {f["path"]: f for f in yaml.safe_load(machine.user_data)["write_files"]}
        wrapper = files["/usr/local/sbin/vcycle-dirac-pilot-wrapper"]["content"]
        assert base64.b64decode(wrapper).decode() == wrappers[machine.name]
        assert len(fit_user_data(machine.user_data, 16384)) <= 16384
    # the SiteDirector restarted: the pilots booting or waiting count as waiting, nothing more is submitted
    log = sitedirector(dirac_testbed)
    again = {ref: row for ref, row in pilot_agents(dirac_testbed).items() if ref not in before}
    assert set(again) == set(ours), log[-3000:]
    assert f"Wait={expected}" in log, log[-3000:]
    # its pilot monitoring asked the CE: the booting machines' pilots are Scheduled, the others Waiting
    statuses = sorted(status for _, status in again.values())
    assert statuses == ["Scheduled"] * 3 + ["Waiting"] * (expected - 3), statuses
    store.close()

