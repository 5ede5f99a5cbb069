"""1,000 pilot pods created and deleted in a real Kubernetes: vcycle next to a plain kubernetes-client loop.

The cluster is the project's testbed (scripts/kubernetes_testbed.py: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok, on this
machine), with a fake node big enough for every pod. vcycle runs its
daemon's code path (Manager.cycle) as the vcycle service account of
etc/kubernetes/vcycle-rbac.yaml: one cycle creates the pods (user-data
rendered from the shipped ``pilot-container`` template, intent recorded in
SQLite first, then per pod its Secret, the Pod and the Secret's owner),
then, with the space's shutdown_time moved into the past, one cycle deletes
them. The plain loop makes the same calls with the same client and as many
threads (``create_workers``, 8): list pods, secrets and quotas; per pod
create the Secret, create the Pod, patch the Secret's owner; list pods and
secrets; delete every pod. Each round runs in a fresh namespace; the rounds
alternate which side goes first, after a warm-up round that is not counted.

The fill: with the demand file saying no idle jobs, one cycle makes
nothing; then the file says 1,000 and the clock starts: one cycle creates
the pods, and the fill ends when every pod is Running (scheduled, bound and
started by kwok).

    .venv/bin/python benchmarks/kubernetes.py [--pods 1000] [--rounds 3]

Ends with ``RESULT client_ratio=... pods_1000_fill_s=...``: the median over the rounds of vcycle's time for its two
cycles / the loop's time, and the median fill time.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# This file's own name would shadow the kubernetes package: take its directory off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import kubernetes_testbed  # noqa: E402
import kubespace  # noqa: E402

from vcycle.config import load_config  # noqa: E402
from vcycle.connectors.kubernetes import KubernetesSpace, make_client  # noqa: E402
from vcycle.loop.daemon import Manager  # noqa: E402
from vcycle.store import Store  # noqa: E402

WORKERS = 8
TEMPLATE = ROOT / "userdata" / "templates" / "pilot-container.j2"


def write_config(directory: str, space: kubespace.Space, pods: int, *, shutdown: int | None = None,
                 demand: bool = False) -> list[str]:
    lines = ["[settings]", f"state_url = sqlite:///{directory}/state.db", f"state_dir = {directory}",
             "manager_name = bench", "max_create_fraction = 1", f"create_workers = {WORKERS}",
             "[space bench]", "api = kubernetes", f"kubeconfig = {space.kubeconfig}", f"processors_limit = {pods}"]
    if shutdown is not None:
        lines.append(f"shutdown_time = {shutdown}")
    lines += ["[machinetype bench pilot]", "container_image = registry.example/pilot:1", "target_share = 1",
              "backoff_seconds = 0", "fizzle_seconds = 0", "user_data = pilot-container", "mb_per_processor = 64"]
    if demand:
        lines += ["demand = jobs", "[demand jobs]", "type = file", f"path = {directory}/demand.json"]
    path = f"{directory}/bench.conf"
    Path(path).write_text("\n".join(lines) + "\n")
    return [path]


def demand(directory: str, idle: int) -> None:
    document = {"bench": {"pilot": {"idle_jobs": idle, "running_jobs": 0}}}
    Path(f"{directory}/demand.json.new").write_text(json.dumps(document))
    Path(f"{directory}/demand.json.new").rename(f"{directory}/demand.json")


def counted(reports: list[Any], what: str) -> int:
    for error in [e for r in reports for e in r.errors][:3]:
        print(f"  vcycle: {error.message}")
    return sum(r.counts.get(what, 0) for r in reports)


def run_vcycle(space: kubespace.Space, pods: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        config = load_config(write_config(directory, space, pods), hostname="bench")
        store = Store.open(config.settings.state_url)
        started = time.perf_counter()
        created = counted(Manager(config, store, processes=1).cycle(), "creates")
        config = load_config(write_config(directory, space, pods, shutdown=int(time.time()) - 1), hostname="bench")
        deleted = counted(Manager(config, store, processes=1).cycle(), "deletes")
        elapsed = time.perf_counter() - started
        store.close()
    if created != pods or deleted != pods:
        raise SystemExit(f"vcycle created {created} and deleted {deleted} of {pods}")
    return elapsed


def run_loop(space: kubespace.Space, pods: int) -> float:
    """The calls of vcycle's two cycles, made with the same client and as many threads."""
    client, _ = make_client(KubernetesSpace(kubeconfig=str(space.kubeconfig)), WORKERS + 4)
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(client)
    namespace = space.namespace
    script = base64.b64encode(TEMPLATE.read_bytes()).decode()

    def create(n: int) -> None:
        name = f"plain-{n}"
        tags = {"vcycle-space": "plain", "vcycle-machinetype": "pilot", "vcycle-manager": "plain",
                "vcycle-request": uuid.uuid4().hex}
        metadata = {"name": name, "labels": tags, "annotations": tags}
        core.create_namespaced_secret(namespace, {"metadata": metadata, "data": {"user-data": script}},
                                      _preload_content=False)
        pod = json.loads(core.create_namespaced_pod(namespace, {"metadata": metadata, "spec": {
            "restartPolicy": "Never", "containers": [{
                "name": "pilot", "image": "registry.example/pilot:1", "command": ["/vcycle/user-data"],
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}},
                "volumeMounts": [{"name": "vcycle", "mountPath": "/vcycle", "readOnly": True}]}],
            "volumes": [{"name": "vcycle", "secret": {"secretName": name}}]}}, _preload_content=False).data)
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod["metadata"]["uid"]}
        core.patch_namespaced_secret(name, namespace, {"metadata": {"ownerReferences": [owner]}},
                                     _preload_content=False)

    def listing() -> list[dict[str, Any]]:
        core.list_namespaced_secret(namespace, _preload_content=False)
        return list(json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)["items"])

    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        listing()
        core.list_namespaced_resource_quota(namespace, _preload_content=False)
        list(pool.map(create, range(pods)))
        found = listing()
        list(pool.map(lambda p: core.delete_namespaced_pod(p["metadata"]["name"], namespace, _preload_content=False,
                                                           body={"preconditions": {"uid": p["metadata"]["uid"]}}),
                      found))
    elapsed = time.perf_counter() - started
    if len(found) != pods:
        raise SystemExit(f"the loop created {pods} and found {len(found)}")
    return elapsed


def fill(space: kubespace.Space, pods: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        demand(directory, 0)
        config = load_config(write_config(directory, space, pods, demand=True), hostname="bench")
        store = Store.open(config.settings.state_url)
        manager = Manager(config, store, processes=1)
        if counted(manager.cycle(), "creates"):
            raise SystemExit("vcycle created pods for no demand")
        demand(directory, pods)
        started = time.perf_counter()
        created = counted(manager.cycle(), "creates")
        while sum(p["status"].get("phase") == "Running" for p in space.pods()) < pods:
            if time.perf_counter() - started > 600:
                raise SystemExit("the pods were not all Running within 600 s")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        store.close()
    if created != pods:
        raise SystemExit(f"vcycle created {created} of {pods} for a demand of {pods}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reason = kubernetes_testbed.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"cannot start the Kubernetes testbed: {reason}")
    work = Path(tempfile.mkdtemp(prefix="vcycle-bench-kubernetes-"))
    started = time.monotonic()
    testbed = kubernetes_testbed.start(work / "cluster")
    print(f"Kubernetes testbed up in {time.monotonic() - started:.1f}s")
    try:
        testbed.add_node("kwok-bench", cpu=args.pods * 2, memory=f"{args.pods * 256}Mi", pods=args.pods * 2)

        def fresh() -> kubespace.Space:
            return kubespace.make(testbed, work, prefix="bench")

        run_vcycle(fresh(), args.pods)  # warm-up, not counted
        ratios, fills = [], []
        for round_ in range(1, args.rounds + 1):
            timed = {}
            for side in (("vcycle", "loop") if round_ % 2 else ("loop", "vcycle")):
                space = fresh()
                timed[side] = (run_vcycle if side == "vcycle" else run_loop)(space, args.pods)
                kubespace.remove(space)
            ratios.append(timed["vcycle"] / timed["loop"])
            space = fresh()
            fills.append(fill(space, args.pods))
            kubespace.remove(space)
            print(f"round {round_}: vcycle {timed['vcycle']:.2f} s, client loop {timed['loop']:.2f} s for "
                  f"{args.pods} creates and deletes: ratio {ratios[-1]:.2f}; fill of {args.pods} pods from a demand "
                  f"change {fills[-1]:.2f} s", flush=True)
    finally:
        testbed.stop()
    print(f"RESULT client_ratio={statistics.median(ratios):.2f} pods_{args.pods}_fill_s={statistics.median(fills):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
