"""Records the squeue and sinfo documents tests/demand/slurm-*.json hold, from a real Slurm started here
(scripts/slurm_testbed.py): jobs running, pending for resources and priority, held by the user and by the admin,
waiting on a dependency and a begin time, an array with a throttle, GPU jobs, a job for a feature no node up has,
jobs for the partition of dynamic nodes (none yet), a two-node job, --mem-per-cpu, --tmp and time limits; the
nodes idle, allocated, drained, never started and powered down.

    .venv/bin/python scripts/slurm/record.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import slurm_testbed

OUT = Path(__file__).resolve().parents[2] / "tests" / "demand"


def main() -> None:
    testbed = slurm_testbed.start()
    try:
        sbatch = testbed.sbatch
        first = sbatch("-c", "4", "-J", "running")
        sbatch("-c", "4", "-J", "running2")
        sbatch("-c", "4", "-J", "resources")
        sbatch("-c", "2", "--mem=3000", "-t", "30", "-J", "priority-mem")
        sbatch("--hold", "-J", "held-user")
        held = sbatch("-J", "held-admin")
        testbed.run("scontrol", "hold", str(held))
        sbatch(f"--dependency=afterok:{first}", "-J", "dependency")
        sbatch("--begin=now+1hour", "-J", "begin")
        sbatch("--array=1-10%3", "-J", "array")
        sbatch("-p", "gpu", "--gres=gpu:1", "-c", "2", "-J", "gpu-one", seconds=300)
        sbatch("-p", "gpu", "--gres=gpu:2", "-c", "2", "-J", "gpu-two", seconds=300)
        sbatch("--constraint=late", "-J", "late-feature")
        sbatch("-p", "dyn", "-c", "2", "--mem-per-cpu=500", "-J", "dyn-small")
        sbatch("-p", "dyn", "-N", "2", "-c", "4", "--tmp=2000", "-t", "120", "-J", "dyn-two-nodes")
        sbatch("-p", "dyn", "-t", "2-00:00:00", "-J", "dyn-long")
        testbed.run("scontrol", "update", "nodename=c2", "state=drain", "reason=recording")
        time.sleep(4)  # a scheduler pass (sched_interval=2)
        for name, command in (("squeue", ["squeue", "--json"]), ("sinfo", ["sinfo", "--json"])):
            document = json.loads(testbed.run(*command))
            (OUT / f"slurm-{name}.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        for job in json.loads(testbed.run("squeue", "--json"))["jobs"]:
            print(job["job_id"], job["name"], job["job_state"], job["state_reason"])
    finally:
        testbed.stop()


if __name__ == "__main__":
    main()
