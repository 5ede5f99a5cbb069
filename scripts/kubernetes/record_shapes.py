"""Records the pod shapes tests/connectors/kubernetes-shapes.json holds, from a running testbed (a pod as created,
Unschedulable, Running, Succeeded, Failed, DeadlineExceeded), managedFields left out.

    .venv/bin/python scripts/kubernetes/record_shapes.py TESTBED_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kubernetes_testbed

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    testbed = kubernetes_testbed.attach(Path(sys.argv[1]))
    namespace = f"shapes-{int(time.time())}"
    testbed.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": namespace}})
    while True:
        try:
            testbed.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
            break
        except OSError:
            time.sleep(0.2)
    pods = f"/api/v1/namespaces/{namespace}/pods"

    def make(name: str, annotations: dict[str, str] | None = None, **spec: object) -> dict[str, object]:
        return testbed.request("POST", pods, {  # type: ignore[no-any-return]
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "pilot", "image": "registry.example/pilot:1",
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}], **spec}})

    shapes = {"created": make("created", activeDeadlineSeconds=3600)}
    make("unschedulable", nodeSelector={"no-such": "node"})
    make("running", activeDeadlineSeconds=3600)
    make("succeeded", {"pod-complete.stage.kwok.x-k8s.io/delay": "1s"})
    make("failed", {"pod-fail.stage.kwok.x-k8s.io/delay": "1s"})
    make("deadline-exceeded", activeDeadlineSeconds=2)
    time.sleep(6)
    for name in ("unschedulable", "running", "succeeded", "failed", "deadline-exceeded"):
        shapes[name] = testbed.request("GET", f"{pods}/{name}")
    for shape in shapes.values():
        shape["metadata"].pop("managedFields", None)  # type: ignore[union-attr]
    out = ROOT / "tests" / "connectors" / "kubernetes-shapes.json"
    out.write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n")
    testbed.request("DELETE", f"/api/v1/namespaces/{namespace}")
    phases = ", ".join(f"{name} {shape['status'].get('phase')}" for name, shape in shapes.items())  # type: ignore[index]
    print(f"{out}: {phases}")


if __name__ == "__main__":
    main()
