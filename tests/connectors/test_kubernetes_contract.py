"""The Kubernetes connector against a real control plane on this machine (scripts/kubernetes_testbed.py: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok as the kubelet), through the connector
contract and beyond it: the state table's rows made real with kwok's stages, stuck pods failed after their
pending timeout, quotas, foreign pods, the Secrets that carry the user-data. Every call of the connector goes
through a service account holding exactly the Role of etc/kubernetes/vcycle-rbac.yaml."""

from __future__ import annotations

import base64
import gzip
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubespace
import pytest
from contract import ConnectorContract, by_name, spec

from vcycle.connectors import kubernetes as k8s
from vcycle.connectors.kubernetes import KubernetesConnector, KubernetesMachinetype, KubernetesSpace, make_client
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded
from vcycle.testing import wait_for

# raw state -> what the connector must make of it (made real by kwok's stages: scripts/kubernetes/kwok-stages.yaml)
STATE_ROWS = [("Running", CloudStatus.RUNNING), ("Succeeded", CloudStatus.STOPPED), ("Failed", CloudStatus.FAILED),
              ("OOMKilled", CloudStatus.FAILED), ("Evicted", CloudStatus.FAILED),
              ("DeadlineExceeded", CloudStatus.FAILED)]
STAGE = {"Succeeded": "pod-complete", "Failed": "pod-fail", "OOMKilled": "pod-oom", "Evicted": "pod-evict"}
IMAGE = "registry.example/pilot:1"


@pytest.fixture
def kspace(kubernetes_testbed: Any, tmp_path: Path) -> Iterator[kubespace.Space]:
    space = kubespace.make(kubernetes_testbed, tmp_path)
    yield space
    kubespace.remove(space)


def connector_for(space: kubespace.Space, **machinetype: Any) -> KubernetesConnector:
    client, _ = make_client(KubernetesSpace(kubeconfig=str(space.kubeconfig)), 8)
    pending = machinetype.pop("pending", 900)
    options = KubernetesMachinetype(container_image=IMAGE, **machinetype)
    return KubernetesConnector(client, space.namespace, "contract", machinetypes={"mt": options}, manager="mgr",
                               memory_mb={"mt": 256}, pending_timeout=pending, timeout=30)


@pytest.fixture
def connector(kspace: kubespace.Space) -> KubernetesConnector:
    return connector_for(kspace)


def phase(space: kubespace.Space, name: str) -> str:
    return str(space.admin("GET", f"/pods/{name}")["status"].get("phase"))


@pytest.fixture
def cloud_tweak(kspace: kubespace.Space) -> Any:
    def tweak(machine: CloudMachine, raw: str) -> None:
        wait_for(lambda: phase(kspace, machine.name) == "Running")
        if raw in STAGE:
            kspace.admin("PATCH", f"/pods/{machine.name}",
                         {"metadata": {"annotations": {f"{STAGE[raw]}.stage.kwok.x-k8s.io/delay": "0s"}}})
        elif raw == "DeadlineExceeded":  # a deadline may be shortened on a running pod
            kspace.admin("PATCH", f"/pods/{machine.name}", {"spec": {"activeDeadlineSeconds": 1}})
        want = {"Running": "Running", "Succeeded": "Succeeded"}.get(raw, "Failed")
        wait_for(lambda: phase(kspace, machine.name) == want)

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


class TestKubernetesConnector(ConnectorContract):
    """The contract, in a namespace of its own, as the vcycle service account."""


def test_a_finished_pod_says_how_it_ended(connector: KubernetesConnector, kspace: kubespace.Space,
                                          cloud_tweak: Any) -> None:
    made = connector.create_machine(spec())
    cloud_tweak(made, "OOMKilled")
    assert "exit 137 OOMKilled" in by_name(connector)[made.name].detail
    again = connector.create_machine(spec(name="vcycle-mt-deadline", request="req-deadline"))
    cloud_tweak(again, "DeadlineExceeded")
    assert "Failed DeadlineExceeded" in by_name(connector)[again.name].detail


@pytest.mark.parametrize(("options", "words"), [
    ({"pod_annotations": (("vcycle.testbed/image-pull", "fail"),)}, "ImagePullBackOff"),
    ({"node_selector": (("no-such-label", "anywhere"),)}, "Unschedulable"),
], ids=["image-pull", "unschedulable"])
def test_a_pod_stuck_pending_fails_after_its_pending_timeout(kspace: kubespace.Space, options: dict[str, Any],
                                                             words: str) -> None:
    """Pending with a reason that does not pass by itself: STARTING, then FAILED with the reason once it has been
    Pending for pending_timeout_seconds (counted from its creation: an unschedulable pod has no start time)."""
    connector = connector_for(kspace, pending=3, **options)
    made = connector.create_machine(spec())
    wait_for(lambda: words in by_name(connector)[made.name].detail)
    assert by_name(connector)[made.name].status is CloudStatus.STARTING
    wait_for(lambda: by_name(connector)[made.name].status is CloudStatus.FAILED, seconds=15)
    assert words in by_name(connector)[made.name].detail
    connector.delete_machine(made.id)
    wait_for(lambda: made.name not in by_name(connector))


def test_the_user_data_and_token_are_in_a_secret_owned_by_the_pod(connector: KubernetesConnector,
                                                                   kspace: kubespace.Space) -> None:
    script = b"#!/bin/sh\necho pilot\n"
    made = connector.create_machine(spec(user_data=script, token="machine-token-1"))
    secret = kspace.admin("GET", f"/secrets/{made.name}")
    assert base64.b64decode(secret["data"]["user-data"]) == script
    assert base64.b64decode(secret["data"]["token"]) == b"machine-token-1"
    assert secret["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": made.name,
                                                      "uid": made.id}]
    pod = kspace.admin("GET", f"/pods/{made.name}")
    assert pod["metadata"]["labels"]["vcycle-space"] == "contract"
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == made.name
    assert "machine-token-1" not in str(pod)
    connector.delete_machine(made.id)
    wait_for(lambda: made.name not in {s["metadata"]["name"] for s in kspace.secrets()})  # garbage-collected


def test_a_large_script_is_gzipped_into_the_secret_and_unpacked_by_the_pod(connector: KubernetesConnector,
                                                                           kspace: kubespace.Space) -> None:
    script = b"#!/bin/sh\n" + b"# padding\n" * (connector.max_user_data_bytes // 10 + 10) + b"exit 0\n"
    made = connector.create_machine(spec(user_data=script))
    secret = kspace.admin("GET", f"/secrets/{made.name}")
    assert gzip.decompress(base64.b64decode(secret["data"]["user-data"])) == script
    assert kspace.admin("GET", f"/pods/{made.name}")["spec"]["containers"][0]["command"][:2] == ["/bin/sh", "-c"]


def test_a_cloud_config_is_refused_before_any_call(connector: KubernetesConnector, kspace: kubespace.Space) -> None:
    with pytest.raises(LaunchRejected, match="no part starting with '#!'"):
        connector.create_machine(spec(user_data=b"#cloud-config\nruncmd: [poweroff]\n"))
    assert kspace.pods() == []
    assert "vcycle-mt-contract01" not in {s["metadata"]["name"] for s in kspace.secrets()}


def test_quota_capacity_and_refusal(connector: KubernetesConnector, kspace: kubespace.Space) -> None:
    """capacity() is what the ResourceQuota leaves free plus what vcycle counts itself (ours and foreign pods);
    a create past it is the apiserver's 403 'exceeded quota', QuotaExceeded."""
    kspace.quota(requests_cpu="3", pods="10")
    kspace.foreign_pod("someone-elses")
    connector.list_machines()
    assert connector.capacity() == 3
    connector.create_machine(spec(name="vcycle-mt-q1", request="req-q1"))
    connector.create_machine(spec(name="vcycle-mt-q2", request="req-q2"))
    listed = connector.list_machines()
    assert connector.capacity() == 3 and sum(m.processors or 0 for m in listed) == 3
    with pytest.raises(QuotaExceeded, match="exceeded quota: vcycle-quota"):
        connector.create_machine(spec(name="vcycle-mt-q3", request="req-q3"))
    assert "vcycle-mt-q3" not in {p["metadata"]["name"] for p in kspace.pods()}


def test_a_pods_quota_counts_free_pods_as_the_smallest_machine(kspace: kubespace.Space) -> None:
    kspace.quota(pods="2", requests_cpu="100")
    connector = connector_for(kspace)
    connector.smallest = 4
    connector.list_machines()
    assert connector.capacity() == 8


def test_foreign_pods_are_listed_counted_and_never_touched(connector: KubernetesConnector,
                                                           kspace: kubespace.Space) -> None:
    foreign = kspace.foreign_pod("not-vcycles", cpu="2")
    finished = kspace.foreign_pod("finished-one")
    kspace.admin("PATCH", "/pods/finished-one",
                 {"metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "0s"}}})
    wait_for(lambda: phase(kspace, "finished-one") == "Succeeded")
    listed = by_name(connector)
    assert listed["not-vcycles"].owner is None and listed["not-vcycles"].processors == 2
    assert "finished-one" not in listed  # a finished pod holds nothing
    connector.delete_machine(foreign["metadata"]["uid"])
    connector.delete_machine(finished["metadata"]["uid"])
    assert {"not-vcycles", "finished-one"} <= {p["metadata"]["name"] for p in kspace.pods()}


def test_leftover_secrets_are_owned_or_deleted(connector: KubernetesConnector, kspace: kubespace.Space,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between the Secret and the Pod leaves a Secret with no pod: deleted once old enough; a crash
    between the Pod and the owner leaves an unowned Secret: given its pod at the next listing."""
    made = connector.create_machine(spec(name="vcycle-mt-owned", request="req-owned"))
    kspace.admin("PATCH", f"/secrets/{made.name}", {"metadata": {"ownerReferences": None}})
    connector._secret(spec(name="vcycle-mt-orphan", request="req-orphan"), b"#!/bin/sh\n")
    connector.list_machines()  # a listing alone changes nothing (vcycle plan lists too)
    assert not kspace.admin("GET", f"/secrets/{made.name}")["metadata"].get("ownerReferences")
    connector.delete_machine("no-such-uid")  # the first create or delete after a listing tidies
    names = {s["metadata"]["name"]: s for s in kspace.secrets()}
    assert names["vcycle-mt-owned"]["metadata"]["ownerReferences"][0]["uid"] == made.id
    assert "vcycle-mt-orphan" in names  # too young: its pod may be on its way
    monkeypatch.setattr(k8s, "ORPHAN_SECONDS", 0)
    connector.list_machines()
    connector.create_machine(spec(name="vcycle-mt-next", request="req-next"))
    assert "vcycle-mt-orphan" not in {s["metadata"]["name"] for s in kspace.secrets()}


def test_a_create_clashing_with_a_secret_of_another_request_is_refused(connector: KubernetesConnector,
                                                                       kspace: kubespace.Space) -> None:
    connector._secret(spec(request="req-first"), b"#!/bin/sh\n")
    with pytest.raises(LaunchRejected, match="another request"):
        connector.create_machine(spec(request="req-second"))
    assert kspace.pods() == []


def test_without_the_role_every_call_is_refused_clearly(kspace: kubespace.Space, tmp_path: Path) -> None:
    testbed = kspace.testbed
    testbed.request("POST", f"/api/v1/namespaces/{kspace.namespace}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}})
    token = testbed.request("POST", f"/api/v1/namespaces/{kspace.namespace}/serviceaccounts/nobody/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}})
    kubeconfig = testbed.write_kubeconfig(tmp_path / "nobody.kubeconfig", token["status"]["token"],
                                          namespace=kspace.namespace)
    client, _ = make_client(KubernetesSpace(kubeconfig=str(kubeconfig)), 2)
    nobody = KubernetesConnector(client, kspace.namespace, "contract", manager="mgr")
    with pytest.raises(CloudUnavailable, match=r"403 pods is forbidden.*Role vcycle needs is in the README"):
        nobody.list_machines()


def test_a_delete_the_cluster_refuses_is_reported_never_counted_as_done(connector: KubernetesConnector,
                                                                       kspace: kubespace.Space,
                                                                       tmp_path: Path) -> None:
    """A service account that may list pods but not delete them: the delete raises, the pod stays."""
    made = connector.create_machine(spec())
    testbed, namespace = kspace.testbed, kspace.namespace
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    testbed.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lister"}})
    testbed.request("POST", f"{rbac}/roles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                              "metadata": {"name": "lister"}, "rules": [
                                                  {"apiGroups": [""], "resources": ["pods", "secrets"],
                                                   "verbs": ["get", "list"]}]})
    testbed.request("POST", f"{rbac}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "lister"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lister"},
        "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}]})
    token = testbed.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/lister/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}})
    client, _ = make_client(KubernetesSpace(kubeconfig=str(testbed.write_kubeconfig(
        tmp_path / "lister.kubeconfig", token["status"]["token"], namespace=namespace))), 2)
    lister = KubernetesConnector(client, namespace, "contract", manager="mgr")
    assert made.name in by_name(lister)
    with pytest.raises(CloudUnavailable, match=f"delete pod {made.name}: 403"):
        lister.delete_machine(made.id)
    assert made.name in {p["metadata"]["name"] for p in kspace.pods()}


def test_credentials_never_reach_the_logs_or_errors(kspace: kubespace.Space, caplog: pytest.LogCaptureFixture,
                                                    tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    token = kspace.kubeconfig.read_text().split('"token": "')[1].split('"')[0]
    connector = connector_for(kspace)
    made = connector.create_machine(spec())
    connector.list_machines()
    connector.delete_machine(made.id)
    bad = tmp_path / "bad.kubeconfig"
    bad.write_text(kspace.kubeconfig.read_text().replace(token, token[:-4] + "AAAA"))
    client, _ = make_client(KubernetesSpace(kubeconfig=str(bad)), 2)
    with pytest.raises(CloudUnavailable, match="401 the cluster refused the credentials") as caught:
        KubernetesConnector(client, kspace.namespace, "contract").list_machines()
    assert token not in caplog.text and token[:-4] not in str(caught.value)


def test_a_kubeconfig_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CloudUnavailable, match=r"kubeconfig .*missing\.kubeconfig does not exist"):
        make_client(KubernetesSpace(kubeconfig=str(tmp_path / "missing.kubeconfig")), 2)
    (tmp_path / "broken.kubeconfig").write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    with pytest.raises(CloudUnavailable, match="cannot be used"):
        make_client(KubernetesSpace(kubeconfig=str(tmp_path / "broken.kubeconfig")), 2)


def test_the_deadline_of_a_real_pod(connector: KubernetesConnector, kspace: kubespace.Space) -> None:
    """max_wallclock of four days gives activeDeadlineSeconds of four days (plus the grace), as the apiserver
    keeps it."""
    made = connector.create_machine(spec(shutdown_at=datetime.now(UTC) + timedelta(days=4)))
    deadline = kspace.admin("GET", f"/pods/{made.name}")["spec"]["activeDeadlineSeconds"]
    assert 4 * 86400 < deadline <= 4 * 86400 + k8s.DEADLINE_GRACE_SECONDS + 5
