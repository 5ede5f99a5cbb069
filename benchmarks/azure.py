"""vcycle's Azure space next to a plain SDK loop making the same calls, against the fake Resource Manager.

The fake (tests/fakearm.py) runs as a process of its own on loopback over TLS, so that its work is not counted
in either side's process. Both sides use the same real SDK clients (azure-mgmt-compute, azure-mgmt-network, a
service principal through azure-identity). vcycle runs its daemon's code path (Manager.cycle), one call at a
time (``create_workers = 1``): one cycle creates N machines (user-data rendered from the shipped
``pilot-container`` template, intent recorded in SQLite first), then, with the space's shutdown_time in the
past, one cycle deletes them. The loop makes the calls vcycle makes: the resource group's VMs, the power states,
the resource SKUs, the usages, the orphan sweep's three listings, N times a NIC and a VM (the same tags and
custom data, ``If-None-Match``, ``polling=False``); then, as the next cycle's connector (its clients and token
made again, as vcycle's are), the VMs, the power states, the SKUs, the usages, the sweep's listings with the N
OS disks tagged, and N deletes.
The rounds alternate which side goes first, after a warm-up round that is not counted.

    .venv/bin/python benchmarks/azure.py [--machines 100] [--rounds 5]

Ends with ``RESULT sdk_ratio=... cpu_ratio=...``: the medians over the rounds of vcycle's time / the loop's (goal
<= 1.2), and of the CPU time of this process (the fake's is not in it).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# This file's own name would shadow the azure package: take its directory off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import azurespace  # noqa: E402
from fakearm import Arm  # noqa: E402

from vcycle.config import load_config  # noqa: E402
from vcycle.connectors.azure import make_clients  # noqa: E402
from vcycle.loop.daemon import Manager  # noqa: E402
from vcycle.store import Store  # noqa: E402

TEMPLATE = ROOT / "userdata" / "templates" / "pilot-container.j2"


class Remote(Arm):
    """The fake's identity as the process it runs in has it (the defaults), reached at ``url``."""

    def __init__(self, directory: Path, url: str) -> None:
        super().__init__(directory)
        self._url = url
        self.ca_file = directory / "arm-ca.pem"

    @property
    def url(self) -> str:
        return self._url


def write(directory: str, arm: Remote, machines: int, space: str, shutdown: int | None) -> list[str]:
    lines = ["[settings]", f"state_url = sqlite:///{directory}/state.db", f"state_dir = {directory}",
             "manager_name = bench", "max_create_fraction = 1", "create_workers = 1", f"[space {space}]",
             azurespace.space_lines(arm, Path(directory) / "keys", resource_group=space).strip(),
             f"processors_limit = {machines}"]
    if shutdown is not None:
        lines.append(f"shutdown_time = {shutdown}")
    lines += [f"[machinetype {space} pilot]", f"root_image = {azurespace.IMAGE}", "flavor_names = Standard_B1s",
              "target_share = 1", "backoff_seconds = 0", "fizzle_seconds = 0", "user_data = pilot-container"]
    path = f"{directory}/bench.conf"
    Path(path).write_text("\n".join(lines) + "\n")
    return [path]


def run_vcycle(arm: Remote, machines: int) -> tuple[float, float]:
    space = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as directory:
        config = load_config(write(directory, arm, machines, space, None), hostname="bench")
        store = Store.open(config.settings.state_url)
        started, cpu = time.perf_counter(), time.process_time()
        reports = Manager(config, store, processes=1).cycle()
        created = sum(r.counts.get("creates", 0) for r in reports)
        config = load_config(write(directory, arm, machines, space, int(time.time()) - 1), hostname="bench")
        deleted = sum(r.counts.get("deletes", 0) for r in Manager(config, store, processes=1).cycle())
        elapsed, used = time.perf_counter() - started, time.process_time() - cpu
        store.close()
    if created != machines or deleted != machines:
        for error in [e for r in reports for e in r.errors][:3]:
            print(f"  vcycle: {error.message}")
        raise SystemExit(f"vcycle created {created} and deleted {deleted} of {machines}")
    return elapsed, used


def run_loop(arm: Remote, machines: int, directory: Path) -> tuple[float, float]:
    from azure.core import MatchConditions

    group = f"plain-{uuid.uuid4().hex[:8]}"
    keys = azurespace.options(arm, directory, resource_group=group)
    custom = base64.b64encode(TEMPLATE.read_bytes()).decode()
    started, cpu = time.perf_counter(), time.process_time()
    clients = make_clients(keys, 60)  # a cycle's connector: its clients and its token
    compute, network = clients.compute, clients.network
    list(compute.virtual_machines.list(group))
    list(compute.virtual_machines.list_all(status_only="true"))
    list(compute.resource_skus.list(filter="location eq 'westeurope'"))
    list(compute.usage.list("westeurope"))
    sweep(compute, network, group)
    for n in range(machines):
        name = f"plain-{n}"
        tags = {"vcycle-space": group, "vcycle-machinetype": "pilot", "vcycle-manager": "plain",
                "vcycle-request": uuid.uuid4().hex}
        nic_id = f"/subscriptions/{keys.subscription_id}/resourceGroups/{group}/providers/Microsoft.Network/" \
                 f"networkInterfaces/{name}-nic"
        network.network_interfaces.begin_create_or_update(group, f"{name}-nic", {
            "location": "westeurope", "tags": tags, "properties": {"ipConfigurations": [
                {"name": "ipconfig1", "properties": {"subnet": {"id": keys.subnet_id}}}]}}, polling=False)
        compute.virtual_machines.begin_create_or_update(group, name, {
            "location": "westeurope", "tags": tags, "properties": {
                "hardwareProfile": {"vmSize": "Standard_B1s"},
                "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "o", "sku": "s",
                                                      "version": "latest"},
                                   "osDisk": {"name": f"{name}-osdisk", "createOption": "FromImage",
                                              "deleteOption": "Delete"}},
                "osProfile": {"computerName": name, "adminUsername": "vcycle", "customData": custom},
                "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"deleteOption": "Delete"}}]}}},
            match_condition=MatchConditions.IfMissing, polling=False)
    clients = make_clients(keys, 60)  # the next cycle's
    compute, network = clients.compute, clients.network
    found = list(compute.virtual_machines.list(group))
    list(compute.virtual_machines.list_all(status_only="true"))
    list(compute.resource_skus.list(filter="location eq 'westeurope'"))
    list(compute.usage.list("westeurope"))
    for disk in sweep(compute, network, group):  # the OS disks are tagged as their VMs are
        compute.disks.begin_update(group, disk, {"tags": {"vcycle-space": group}}, polling=False)
    for vm in found:
        compute.virtual_machines.begin_delete(group, vm.name, polling=False)
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    if len(found) != machines:
        raise SystemExit(f"the loop created {machines} and found {len(found)}")
    return elapsed, used


def sweep(compute: Any, network: Any, group: str) -> list[str]:
    """The orphan sweep's listings; the names of the disks."""
    list(network.network_interfaces.list(group))
    list(network.public_ip_addresses.list(group))
    return [d.name for d in compute.disks.list_by_resource_group(group)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        where = Path(directory)
        server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakearm.py"), str(where / "arm"),
                                   "--op-seconds", "0.2", "--vcpus", "1000000"], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            arm = Remote(where / "arm", server.stdout.readline().strip())
            run_vcycle(arm, args.machines)  # warm-up, not counted
            ratios, cpu_ratios = [], []
            for round_ in range(1, args.rounds + 1):
                timed = {}
                for side in (("vcycle", "loop") if round_ % 2 else ("loop", "vcycle")):
                    timed[side] = run_vcycle(arm, args.machines) if side == "vcycle" else run_loop(
                        arm, args.machines, where / f"loop{round_}")
                ratios.append(timed["vcycle"][0] / timed["loop"][0])
                cpu_ratios.append(timed["vcycle"][1] / timed["loop"][1])
                print(f"round {round_}: vcycle {timed['vcycle'][0]:.2f} s ({timed['vcycle'][1]:.2f} s CPU), SDK "
                      f"loop {timed['loop'][0]:.2f} s ({timed['loop'][1]:.2f} s CPU) for {args.machines} creates "
                      f"and deletes: ratio {ratios[-1]:.2f} ({cpu_ratios[-1]:.2f} CPU)", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"RESULT sdk_ratio={statistics.median(ratios):.2f} cpu_ratio={statistics.median(cpu_ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
