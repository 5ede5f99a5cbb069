"""The Kubernetes connector's pure parts: the state table (a test per row, on pod shapes recorded from a real
kube-apiserver with kwok), the pod it asks for, quotas, the error map (a test per row, on the client's own
ApiException with the Status bodies a real apiserver sends), and its keys as a configuration gives them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from vcycle.config import load_config
from vcycle.connectors.kubernetes import (
    KubernetesConnector,
    KubernetesMachinetype,
    _mapped,
    cpu,
    label_value,
    pod_status,
    processors_of,
    quota_room,
)
from vcycle.core.model import CloudStatus, LaunchSpec
from vcycle.errors import CloudUnavailable, ConfigError, LaunchRejected, QuotaExceeded, Throttled, Unauthorized

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MADE = "2026-12-02T11:50:00Z"  # ten minutes before NOW


def pod(phase: str, *, made: str = MADE, status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "vcycle-mt-1", "uid": "u-1", "creationTimestamp": made, **metadata},
            "spec": {"containers": [{"name": "pilot", "resources": {"requests": {"cpu": "2"}}}]},
            "status": {"phase": phase, **(status or {})}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"containerStatuses": [{"name": "pilot", "state": {"waiting": {"reason": reason, "message": message}}}]}


def terminated(code: int, why: str, **status: Any) -> dict[str, Any]:
    return {"containerStatuses": [{"name": "pilot", "state": {"terminated": {"exitCode": code, "reason": why}}}],
            **status}


UNSCHEDULABLE = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity."}]}

# (row, pod, pending timeout, the status it maps to, words the detail must hold)
ROWS = [
    ("pending", pod("Pending"), 900, CloudStatus.STARTING, "Pending"),
    ("pending-scheduled-creating", pod("Pending", status=waiting("ContainerCreating")), 1, CloudStatus.STARTING,
     "Pending"),
    ("image-pull-backoff-young", pod("Pending", status=waiting("ImagePullBackOff", "Back-off pulling image")), 900,
     CloudStatus.STARTING, "ImagePullBackOff"),
    ("image-pull-backoff-old", pod("Pending", status=waiting("ImagePullBackOff", "Back-off pulling image")), 600,
     CloudStatus.FAILED, "Pending for 600 s: ImagePullBackOff: Back-off pulling image"),
    ("err-image-pull-old", pod("Pending", status=waiting("ErrImagePull")), 300, CloudStatus.FAILED, "ErrImagePull"),
    ("create-container-config-error-old", pod("Pending", status=waiting("CreateContainerConfigError",
                                                                        'secret "x" not found')),
     300, CloudStatus.FAILED, 'CreateContainerConfigError: secret "x" not found'),
    # no start time, no container statuses: the deadline runs from the pod's creation
    ("unschedulable-young", pod("Pending", status=UNSCHEDULABLE), 900, CloudStatus.STARTING, "Unschedulable"),
    ("unschedulable-old", pod("Pending", status=UNSCHEDULABLE), 60, CloudStatus.FAILED,
     "Unschedulable: 0/1 nodes are available"),
    ("running", pod("Running", status={"startTime": MADE}), 900, CloudStatus.RUNNING, "Running"),
    ("succeeded", pod("Succeeded", status=terminated(0, "Completed")), 900, CloudStatus.STOPPED,
     "Succeeded exit 0 Completed"),
    ("failed", pod("Failed", status=terminated(1, "Error")), 900, CloudStatus.FAILED, "Failed exit 1 Error"),
    ("oom-killed", pod("Failed", status=terminated(137, "OOMKilled")), 900, CloudStatus.FAILED,
     "exit 137 OOMKilled"),
    ("deadline-exceeded", pod("Failed", status=terminated(137, "Error", reason="DeadlineExceeded")), 900,
     CloudStatus.FAILED, "Failed DeadlineExceeded exit 137"),
    ("evicted", pod("Failed", status={"reason": "Evicted", "message": "The node was low on resource: memory."}),
     900, CloudStatus.FAILED, "Failed Evicted (The node was low on resource: memory.)"),
    ("deleting", pod("Running", deletionTimestamp="2026-12-02T11:59:00Z"), 900, CloudStatus.DELETING, "deleting"),
    ("deleting-pending", pod("Pending", status=waiting("ImagePullBackOff"), deletionTimestamp=MADE), 1,
     CloudStatus.DELETING, "deleting"),
    ("phase-unknown", pod("Unknown"), 900, CloudStatus.UNKNOWN, "Unknown"),
    ("no-phase", {"metadata": {"name": "x", "uid": "u"}, "status": {}}, 900, CloudStatus.UNKNOWN, "no phase"),
]


@pytest.mark.parametrize(("row", "shape", "timeout", "expected", "words"), ROWS, ids=[r[0] for r in ROWS])
def test_state_table(row: str, shape: dict[str, Any], timeout: int, expected: CloudStatus, words: str) -> None:
    status, detail = pod_status(shape, NOW, timeout)
    assert status is expected
    assert words in detail


def test_a_recorded_real_pod_of_each_phase_maps_as_its_row() -> None:
    """Shapes recorded from a real kube-apiserver with kwok (tests/connectors/kubernetes-shapes.json)."""
    shapes = json.loads((Path(__file__).parent / "kubernetes-shapes.json").read_text())
    seen = {name: pod_status(shape, NOW, 900)[0] for name, shape in shapes.items()}
    assert seen == {"created": CloudStatus.STARTING, "unschedulable": CloudStatus.FAILED,
                    "running": CloudStatus.RUNNING, "succeeded": CloudStatus.STOPPED, "failed": CloudStatus.FAILED,
                    "deadline-exceeded": CloudStatus.FAILED}


def test_quantities() -> None:
    assert [cpu("2"), cpu("1500m"), cpu("0.5"), cpu(None)] == [2.0, 1.5, 0.5, 0.0]
    with pytest.raises(ValueError):
        cpu("two")
    assert processors_of(pod("Running")) == 2
    assert processors_of({"spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}}) == 1
    assert processors_of({"spec": {"containers": [{"resources": {"requests": {"cpu": "1500m"}}},
                                                  {"resources": {"requests": {"cpu": "1"}}}]}}) == 3


def quota(hard: dict[str, str], used: dict[str, str] | None = None) -> dict[str, Any]:
    return {"spec": {"hard": hard}, "status": {"hard": hard, "used": used or {}}}


def test_quota_room_is_the_tightest_limit_less_what_is_used() -> None:
    assert quota_room([], 1) is None
    assert quota_room([quota({"requests.memory": "8Gi"})], 1) is None  # limits no processor
    assert quota_room([quota({"requests.cpu": "4"}, {"requests.cpu": "1500m"})], 1) == 2.5
    assert quota_room([quota({"requests.cpu": "10", "pods": "5"}, {"requests.cpu": "2", "pods": "2"})], 2) == 6
    assert quota_room([quota({"limits.cpu": "3"}), quota({"requests.cpu": "8"}, {"requests.cpu": "7"})], 1) == 1
    assert quota_room([quota({"requests.cpu": "2"}, {"requests.cpu": "3"})], 1) == 0  # over: nothing, never less


def spec(**extra: Any) -> LaunchSpec:
    return LaunchSpec(name="vcycle-mt-abc", request_id="req-1", space="k8s", machinetype="mt", manager="mgr",
                      processors=2, flavor=None, zone=None, image=None, user_data=b"#!/bin/sh\n",
                      shutdown_at=NOW + timedelta(days=4), metadata={"joboutputs": "https://v/joboutputs"},
                      token="secret-token", **extra)


def body(**options: Any) -> dict[str, Any]:
    connector = KubernetesConnector(object.__new__(type("Client", (), {})), "ns", "k8s", memory_mb={"mt": 1024})
    return connector.pod_body(spec(), KubernetesMachinetype(container_image="img:1", **options), now=NOW)


def test_the_pod_asks_for_what_the_machinetype_says() -> None:
    made = body()
    pilot = made["spec"]["containers"][0]
    assert made["metadata"]["name"] == "vcycle-mt-abc"
    assert made["metadata"]["labels"]["vcycle-space"] == "k8s"
    assert made["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "vcycle"
    assert made["metadata"]["annotations"]["vcycle-request"] == "req-1"
    assert made["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert made["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert made["spec"]["restartPolicy"] == "Never"
    assert pilot["resources"] == {"requests": {"cpu": "2", "memory": "2048Mi"}}
    assert pilot["command"] == ["/vcycle/user-data"]
    assert pilot["securityContext"] == {"allowPrivilegeEscalation": False, "privileged": False,
                                        "capabilities": {"drop": ["ALL"]}}
    assert made["spec"]["securityContext"]["runAsNonRoot"] is True
    assert made["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert made["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in pilot["env"]}
    assert env["JOBOUTPUTS"]["value"] == "https://v/joboutputs"
    assert env["VCYCLE_TOKEN"] == {"name": "VCYCLE_TOKEN",
                                   "valueFrom": {"secretKeyRef": {"name": "vcycle-mt-abc", "key": "token"}}}
    assert "secret-token" not in json.dumps(made)  # the token only in the Secret


def test_the_deadline_is_the_shutdown_time_in_seconds() -> None:
    """Four days of wallclock make a deadline of four days (and the grace), not 26 days."""
    deadline = body()["spec"]["activeDeadlineSeconds"]
    assert 4 * 86400 < deadline <= 4 * 86400 + 600


def test_limits_gpus_placement_and_extra_metadata() -> None:
    made = body(memory_limit_factor=1.5, cpu_limit=True, gpus=1, ephemeral_storage_gb_per_processor=10,
                node_selector=(("pool", "pilots"),), tolerations=(("dedicated", "Equal", "grid", "NoSchedule"),
                                                                  ("spot", "Exists", "", "")),
                priority_class="low", service_account="pilot", pod_labels=(("team", "atlas"),),
                pod_annotations=(("example.org/note", "x"),), run_as_user=4242)
    pilot = made["spec"]["containers"][0]
    assert pilot["resources"] == {
        "requests": {"cpu": "2", "memory": "2048Mi", "ephemeral-storage": "20Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "3072Mi", "cpu": "2", "nvidia.com/gpu": "1"}}
    assert made["spec"]["nodeSelector"] == {"pool": "pilots"}
    assert made["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "grid",
                                            "effect": "NoSchedule"}, {"key": "spot", "operator": "Exists"}]
    assert made["spec"]["priorityClassName"] == "low"
    assert made["spec"]["serviceAccountName"] == "pilot" and made["spec"]["automountServiceAccountToken"] is True
    assert made["spec"]["securityContext"]["runAsUser"] == 4242
    assert made["metadata"]["labels"]["team"] == "atlas"
    assert made["metadata"]["annotations"]["example.org/note"] == "x"


def test_label_values_that_kubernetes_refuses_become_digests() -> None:
    assert label_value("vcycle-e2e.example.org") == "vcycle-e2e.example.org"
    long = "a-manager-name-" + "x" * 80
    assert label_value(long).startswith("h-") and len(label_value(long)) <= 63
    assert label_value(long) == label_value(long) != label_value(long + "y")


def api_error(status: int, message: str, reason: str = "Forbidden") -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                             "reason": reason, "code": status})
    return error


QUOTA_403 = ('pods "vcycle-mt-x" is forbidden: exceeded quota: vcycle-quota, requested: requests.cpu=1, '
             'used: requests.cpu=1500m, limited: requests.cpu=2')
# (row, error, creating, the class it maps to)
ERRORS = [
    ("exceeded-quota", api_error(403, QUOTA_403), True, QuotaExceeded),
    ("exceeded-quota-not-creating", api_error(403, QUOTA_403), False, QuotaExceeded),
    ("quota-needs-limits", api_error(403, 'pods "x" is forbidden: failed quota: q: must specify limits.cpu for: '
                                          "pilot"), True, LaunchRejected),
    ("rbac-forbidden", api_error(403, 'pods is forbidden: User "system:serviceaccount:ns:vcycle" cannot create '
                                      'resource "pods"'), True, Unauthorized),
    ("unauthorized", api_error(401, "Unauthorized", "Unauthorized"), False, Unauthorized),
    ("invalid", api_error(422, 'Pod "x" is invalid: spec.containers[0].image: Required value', "Invalid"), True,
     LaunchRejected),
    ("bad-request", api_error(400, "bad request", "BadRequest"), True, LaunchRejected),
    ("namespace-missing", api_error(404, 'namespaces "nope" not found', "NotFound"), True, CloudUnavailable),
    ("throttled", api_error(429, "too many requests", "TooManyRequests"), True, Throttled),
    ("server-error", api_error(500, "etcdserver: request timed out", "InternalError"), True, CloudUnavailable),
    ("unavailable", api_error(503, "service unavailable", "ServiceUnavailable"), False, CloudUnavailable),
    ("invalid-not-creating", api_error(422, "invalid", "Invalid"), False, CloudUnavailable),
    ("no-answer", MaxRetryError(None, "/api/v1/pods", "connection refused"), False, CloudUnavailable),  # type: ignore[arg-type]
    ("socket", ConnectionResetError("reset by peer"), True, CloudUnavailable),
]


@pytest.mark.parametrize(("row", "error", "creating", "expected"), ERRORS, ids=[r[0] for r in ERRORS])
def test_error_map(row: str, error: Exception, creating: bool, expected: type) -> None:
    with pytest.raises(expected) as caught, _mapped("create pod x", creating=creating):
        raise error
    assert type(caught.value) is expected
    assert caught.value.__cause__ is error
    assert "create pod x" in str(caught.value)


def test_a_429_carries_its_retry_after() -> None:
    error = api_error(429, "too many requests", "TooManyRequests")
    error.headers = {"Retry-After": "7"}
    with pytest.raises(Throttled) as caught, _mapped("list pods", creating=False):
        raise error
    assert caught.value.retry_after == 7


def test_an_error_says_the_status_message_never_the_headers() -> None:
    error = api_error(403, QUOTA_403)
    error.headers = {"Authorization": "Bearer sekrit-token", "Audit-Id": "1"}
    with pytest.raises(QuotaExceeded) as caught, _mapped("create pod x", creating=True):
        raise error
    assert "exceeded quota: vcycle-quota" in str(caught.value) and "sekrit" not in str(caught.value)


def write(tmp_path: Path, machinetype: str, space: str = "") -> Path:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_dir = {tmp_path}

[space k8s]
api = kubernetes
kubeconfig = {tmp_path}/kubeconfig
{space}

[machinetype k8s pilot]
backoff_seconds = 60
fizzle_seconds = 0
target_share = 1
{machinetype}
""")
    return conf


def problems(conf: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config([conf])
    return [(p.section, p.key, p.message) for p in caught.value.problems]


def test_a_machinetype_needs_a_container_image(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "user_data = pilot-container"))
    assert [(s, k) for s, k, _ in found] == [("machinetype k8s pilot", "container_image")]


def test_keys_are_parsed_and_bad_values_named(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "user_data = pilot-container\ncontainer_image = img:1\n"
                                     "tolerations = dedicated=grid:NoSchedulee\nnode_selector = pool\n"
                                     "image_pull_policy = Sometimes", "namespace = Not_A_Namespace"))
    assert {(s, k) for s, k, _ in found} == {("space k8s", "namespace"), ("machinetype k8s pilot", "tolerations"),
                                             ("machinetype k8s pilot", "node_selector"),
                                             ("machinetype k8s pilot", "image_pull_policy")}
    config = load_config([write(tmp_path, "user_data = pilot-container\ncontainer_image = img:1\n"
                                             "tolerations = dedicated=grid:NoSchedule :NoExecute\n"
                                             "node_selector = pool=pilots kubernetes.io/arch=amd64")])
    options = config.spaces["k8s"].machinetypes["pilot"].connector
    assert options.tolerations == (("dedicated", "Equal", "grid", "NoSchedule"), ("", "Exists", "", "NoExecute"))
    assert options.node_selector == (("pool", "pilots"), ("kubernetes.io/arch", "amd64"))
    assert config.spaces["k8s"].runs_script is True


def test_a_cloud_config_template_in_a_script_space_is_an_error_naming_user_data(tmp_path: Path) -> None:
    """Spaces whose cloud runs the user-data as a script (kubernetes, local) refuse user-data with no script part
    when it is rendered: check-config names the key, and the cycle holds the machinetype (launch.prepare raises
    RenderError) instead of failing every create."""
    from vcycle.cli.checks import offline

    (tmp_path / "vm.yaml").write_text("#cloud-config\nruncmd: [poweroff]\n")
    config = load_config([write(tmp_path, f"user_data = {tmp_path}/vm.yaml\ncontainer_image = img:1")])
    errors, _ = offline(config)
    assert [(e.section, e.key) for e in errors] == [("machinetype k8s pilot", "user_data")]
    assert "no part starting with '#!'" in errors[0].message
    script = load_config([write(tmp_path, "user_data = htcondor-startd\nuser_data_option_condor_host = cm\n"
                                          "container_image = img:1")])
    assert offline(script)[0] == []  # the shipped template's container form

