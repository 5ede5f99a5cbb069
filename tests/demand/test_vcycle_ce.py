"""The Vcycle CE (VcycleDIRAC) as DIRAC itself loads and calls it, with DIRAC installed and no DIRAC server:
found by DIRAC's ComputingElementFactory through the ``dirac`` entry point, and answering the SiteDirector's
calls from vcycle's store (a real SQLite file), across a restart of the CE."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

CALLS = '''
import json, sys
import DIRAC
DIRAC.initialize(require_auth=False)
from DIRAC.Core.Utilities.Extensions import extensionsByPriority
from DIRAC.Resources.Computing.ComputingElementFactory import ComputingElementFactory

directory = sys.argv[1]
queue = {"VcycleConfig": directory + "/vcycle.conf", "VcycleSpace": "sp", "VcycleMachinetype": "dirac-pilot",
         "Queue": "default", "Site": "LCG.Example.org", "MaxTotalJobs": 10, "MaxWaitingJobs": 5}
def ce(**changes):
    made = ComputingElementFactory().getCE(ceType="Vcycle", ceName="cloud.example.org",
                                           ceParametersDict=dict(queue, **changes))
    assert made["OK"], made
    return made["Value"]
out = {"extensions": extensionsByPriority()}
first = ce()
out["class"] = type(first).__module__ + "." + type(first).__name__
wrapper = directory + "/wrapper.py"
open(wrapper, "w").write("#!/bin/bash\\necho pilot\\n")
submitted = first.submitJob(wrapper, "", 3)
out["refs"], out["stamps"] = submitted["Value"], submitted["PilotStampDict"]
out["keep"] = submitted.get("ExecutableToKeep")
status = first.getCEStatus()
out["ce_status"] = [status["WaitingJobs"], status["RunningJobs"]]
out["available"] = first.available()["Value"]
again = ce()  # a restarted SiteDirector: a new CE object over the same store
out["again_status"] = again.getCEStatus()["WaitingJobs"]
out["killed"] = again.killJob(out["refs"][:1])["OK"]
out["statuses"] = again.getJobStatus(out["refs"] + ["vcycle://elsewhere/x"])["Value"]
out["kill_foreign"] = again.killJob(["https://ce.example.org/123"])
out["cleanup"] = again.cleanupPilots()["OK"]
name = out["refs"][1].rsplit("/", 1)[1]
import os
os.makedirs(directory + "/joboutputs/sp/" + name)
open(directory + "/joboutputs/sp/" + name + "/pilot.log", "w").write("pilot log\\n")
out["output"] = list(again.getJobOutput(out["refs"][1] + ":::" + out["stamps"][out["refs"][1]])["Value"])
out["unmapped"] = ce(VcycleSpace="").submitJob(wrapper, "", 1)
out["no_config"] = ce(VcycleConfig=directory + "/missing.conf").getCEStatus()
out["not_pilots"] = ce(VcycleMachinetype="other").getCEStatus()
print(json.dumps(out))
'''


def test_dirac_loads_the_vcycle_ce_and_it_answers_from_vcycle_s_store(dirac_python: str, tmp_path: Path) -> None:
    (tmp_path / "vcycle.conf").write_text(textwrap.dedent(f"""\
        [settings]
        state_url = sqlite:///{tmp_path}/state.db
        state_dir = {tmp_path}
        [space sp]
        api = local
        processors_limit = 4
        [demand pilots]
        type = sitedirector
        [machinetype sp dirac-pilot]
        user_data = cernvm-dirac-pilot
        backoff_seconds = 600
        fizzle_seconds = 300
        target_share = 1
        demand = pilots
        [machinetype sp other]
        user_data = cernvm-dirac-pilot
        backoff_seconds = 600
        fizzle_seconds = 300
        """))
    done = subprocess.run([dirac_python, "-c", CALLS, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "DIRAC_ROOT_PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["extensions"][:1] == ["VcycleDIRAC"] and "DIRAC" in out["extensions"]
    assert out["class"] == "VcycleDIRAC.Resources.Computing.VcycleComputingElement.VcycleComputingElement"
    refs = out["refs"]
    assert len(refs) == 3 and all(r.startswith("vcycle://sp/vcycle-dirac-pilot-") for r in refs)
    assert sorted(out["stamps"]) == sorted(refs) and all(len(s) == 32 for s in out["stamps"].values())
    assert out["keep"] is None  # the wrapper is copied into the store: DIRAC may delete its file
    assert out["ce_status"] == [3, 0] and out["available"] == 2  # MaxWaitingJobs 5, three waiting
    assert out["again_status"] == 3
    assert out["killed"] is True
    assert out["statuses"] == {refs[0]: "Deleted", refs[1]: "Waiting", refs[2]: "Waiting",
                               "vcycle://elsewhere/x": "Unknown"}
    assert not out["kill_foreign"]["OK"] and "not this queue's pilots" in out["kill_foreign"]["Message"]
    assert out["cleanup"] is True
    assert out["output"] == ["pilot log\n", ""]
    assert not out["unmapped"]["OK"] and "needs VcycleSpace and VcycleMachinetype" in out["unmapped"]["Message"]
    assert not out["no_config"]["OK"] and "missing.conf" in out["no_config"]["Message"]
    assert not out["not_pilots"]["OK"] and "does not take pilots from DIRAC" in out["not_pilots"]["Message"]
    assert "Traceback" not in done.stderr
