"""Namespaces of the Kubernetes testbed as a site gives them to vcycle: a namespace with the service account,
Role and RoleBinding of etc/kubernetes/vcycle-rbac.yaml (exactly those: the least privilege the README shows),
and a kubeconfig holding a real token of that service account (TokenRequest), optionally a ResourceQuota."""

from __future__ import annotations

import secrets
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RBAC = Path(__file__).resolve().parents[1] / "etc" / "kubernetes" / "vcycle-rbac.yaml"
PATHS = {"ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
         "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
         "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
         "ResourceQuota": "/api/v1/namespaces/{ns}/resourcequotas"}


@dataclass
class Space:
    namespace: str
    kubeconfig: Path  # the vcycle service account's (the Role of etc/kubernetes/vcycle-rbac.yaml), nothing more
    testbed: Any

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A call as the cluster's admin, ``path`` under the namespace (``/pods``, ``/secrets/NAME``)."""
        return self.testbed.request(method, f"/api/v1/namespaces/{self.namespace}{path}", body)

    def pods(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/pods")["items"])

    def secrets(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/secrets")["items"])

    def foreign_pod(self, name: str, cpu: str = "1") -> dict[str, Any]:
        """A pod vcycle did not make (the admin's), holding ``cpu``."""
        return dict(self.admin("POST", "/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "someone-else"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "registry.example/other:1",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"},
                              "limits": {"cpu": cpu, "memory": "64Mi"}}}]}}))

    def quota(self, **hard: str) -> None:
        """A ResourceQuota ``vcycle-quota`` with these limits (``requests.cpu="3"``, ``pods="2"``), waited for until
        the quota controller has filled in its status (until then it refuses every pod)."""
        self.testbed.request("POST", PATHS["ResourceQuota"].format(ns=self.namespace), {
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "vcycle-quota"},
            "spec": {"hard": {k.replace("_", "."): v for k, v in hard.items()}}})
        wait(lambda: self.admin("GET", "/resourcequotas/vcycle-quota").get("status", {}).get("hard"))


def wait(check: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s")
        time.sleep(0.1)


def make(testbed: Any, directory: Path, prefix: str = "vcycle") -> Space:
    """A new namespace set up as a site sets it up for vcycle."""
    namespace = f"{prefix}-{secrets.token_hex(4)}"
    testbed.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": namespace}})
    # no pod is admitted before the namespace's default service account exists (kube-controller-manager makes it)
    wait(lambda: testbed.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default"))
    for document in yaml.safe_load_all(RBAC.read_text()):
        document["metadata"]["namespace"] = namespace
        for subject in document.get("subjects", ()):
            subject["namespace"] = namespace
        testbed.request("POST", PATHS[document["kind"]].format(ns=namespace), document)
    token = testbed.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/vcycle/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 7200}})
    kubeconfig = testbed.write_kubeconfig(directory / f"{namespace}.kubeconfig", token["status"]["token"],
                                          namespace=namespace)
    return Space(namespace, kubeconfig, testbed)


def remove(space: Space) -> None:
    """Delete the namespace (its pods and secrets with it); not waited for."""
    try:
        space.testbed.request("DELETE", f"/api/v1/namespaces/{space.namespace}")
    except urllib.error.HTTPError:
        pass
