"""``api = kubernetes``: machines as pilot pods in one namespace, through the official kubernetes client.

A space is a namespace of a cluster, reached with a kubeconfig (``kubeconfig``,
``context``) or, inside a cluster, its service account. A machine is a bare
Pod named after it (``restartPolicy: Never``), its owner tags both as labels
(for selectors) and as annotations (exact, whatever their length), running the
machinetype's ``container_image``. Its user-data, a script, is mounted
read-only from a Secret of the same name, which also holds the machine's
token for the endpoint; the Secret is made first, then the Pod, then the
Secret is made owned by the Pod, so that it goes with it. A Secret whose Pod
never came (vcycle stopped between the two) is deleted after a later listing,
and one whose Pod came but which was never made owned is given its owner
(at the first create or delete after it: a listing alone changes nothing).

Pods are created with a restrictive security context (non-root, no privilege
escalation, every capability dropped, RuntimeDefault seccomp), no service
account token unless a ``service_account`` is named, the annotations that keep
cluster-autoscaler and Karpenter from evicting a working pilot, and
``activeDeadlineSeconds`` a little past the machine's shutdown time, so that a
pod ends even with no manager alive. Foreign pods of the namespace are listed
(they count against the limits, as foreign VMs do) and never touched; those
that finished hold nothing and are left out.

Listings and creates go through the client's raw responses (``_preload_content``
off): decoding thousands of pods into the client's model classes costs more
than the calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vcycle.connectors.base import ConnectorPlugin, entrypoint, fit_user_data, retry_after
from vcycle.core.model import TAG_MANAGER, TAG_REQUEST, TAG_SPACE, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import boolean, choice, integer, key, matching, number, options_of, seconds, text, words
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded, Throttled, Unauthorized

log = logging.getLogger(__name__)

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
QUALIFIED = r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE KEY2=VALUE2`` (keys as Kubernetes labels and annotations take them)."""
    found = []
    for word in value.split():
        name, equals, item = word.partition("=")
        if not equals or not re.fullmatch(QUALIFIED, name):
            raise ValueError(f"{word!r} is not KEY=VALUE with a Kubernetes key (e.g. example.org/team=atlas)")
        found.append((name, item))
    return tuple(found)


def _tolerations(value: str) -> tuple[tuple[str, str, str, str], ...]:
    """``KEY=VALUE:EFFECT``, ``KEY:EFFECT`` (any value) or ``:EFFECT`` (every taint): (key, operator, value,
    effect); an empty effect tolerates every effect."""
    found = []
    for word in value.split():
        taint, colon, effect = word.rpartition(":")
        if not colon or effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"{word!r} is not KEY[=VALUE]:EFFECT (EFFECT NoSchedule, PreferNoSchedule, NoExecute)")
        name, equals, item = taint.partition("=")
        if name and not re.fullmatch(QUALIFIED, name):
            raise ValueError(f"{word!r}: {name!r} is not a Kubernetes key")
        found.append((name, "Equal" if equals else "Exists", item, effect))
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSpace:
    """The keys of an ``api = kubernetes`` space."""

    kubeconfig: str | None = key(text, None, "kubeconfig file; omitted: the in-cluster service account, else "
                                 "$KUBECONFIG or ~/.kube/config")
    context: str | None = key(text, None, "a context of the kubeconfig; default its current one")
    namespace: str | None = key(matching(DNS_LABEL, "a namespace name"), None,
                                "the namespace; default the context's (or the service account's), else default")
    pending_timeout_seconds: int = key(seconds(1), 900, "a pod Pending this long for a reason that does not pass "
                                       "by itself (image pull, unschedulable, bad configuration) is FAILED")
    page_size: int = key(integer(1, 5000), 500, "pods per page of a listing")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesMachinetype:
    """The keys an ``api = kubernetes`` space adds to its machinetypes."""

    container_image: str | None = key(text, None, "the pilot's container image (required)")
    image_pull_policy: str = key(choice("IfNotPresent", "Always", "Never"), "IfNotPresent", "when to pull it")
    image_pull_secrets: tuple[str, ...] = key(words, (), "Secrets of the namespace to pull it with")
    memory_limit_factor: float | None = key(number(1.0, 1000.0), None,
                                            "memory limit = the request (min_processors x mb_per_processor) x this; "
                                            "omitted: no memory limit")
    cpu_limit: bool = key(boolean, False, "limit CPU to the processors requested (needed by a limits.cpu quota)")
    ephemeral_storage_gb_per_processor: int = key(integer(0, 100000), 0,
                                                  "ephemeral storage requested per processor; 0 = none")
    gpus: int = key(integer(0, 1024), 0, "GPUs of each pod")
    gpu_resource: str = key(matching(QUALIFIED, "a resource name"), "nvidia.com/gpu", "the resource GPUs are")
    node_selector: tuple[tuple[str, str], ...] = key(_pairs, (), "LABEL=VALUE ... the nodes must have")
    tolerations: tuple[tuple[str, str, str, str], ...] = key(_tolerations, (), "taints tolerated: KEY[=VALUE]:EFFECT")
    priority_class: str | None = key(text, None, "the pods' PriorityClass")
    service_account: str | None = key(text, None, "the pods' service account, its token mounted; omitted: "
                                      "the namespace's default, no token mounted")
    run_as_user: int = key(integer(1, 2**31 - 1), 1000, "the user (and group) the pilot runs as: never root")
    pod_labels: tuple[tuple[str, str], ...] = key(_pairs, (), "extra labels KEY=VALUE ...")
    pod_annotations: tuple[tuple[str, str], ...] = key(_pairs, (), "extra annotations KEY=VALUE ...")


def _check_machinetype(mt: MachinetypeConfig) -> list[tuple[str, str]]:
    options = options_of(mt.connector, KubernetesMachinetype)
    problems = []
    if not options.container_image:
        problems.append(("container_image", "is required for Kubernetes: the pilot's image (e.g. "
                                            "registry.cern.ch/atlas/pilot:latest)"))
    return problems


# --- the state table ------------------------------------------------------------------------

# Pending for one of these reasons does not pass by itself: FAILED after pending_timeout_seconds.
STUCK = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                   "CreateContainerConfigError", "CreateContainerError", "Unschedulable"})
PHASES = {"Pending": CloudStatus.STARTING, "Running": CloudStatus.RUNNING, "Succeeded": CloudStatus.STOPPED,
          "Failed": CloudStatus.FAILED}


def _time(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _stuck(status: Mapping[str, Any]) -> str | None:
    """Why a Pending pod will not start by itself, or None."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            return f"Unschedulable: {condition.get('message', '')}".strip()
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK:
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip().rstrip(":")
    return None


def _ended(status: Mapping[str, Any]) -> str:
    """How a finished pod ended: its reason, and its container's exit code and reason."""
    words_ = [status["reason"]] if status.get("reason") else []
    for container in status.get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            words_.append(f"exit {terminated.get('exitCode')}"
                          + (f" {terminated['reason']}" if terminated.get("reason") else ""))
            break
    if status.get("message"):
        words_.append(f"({status['message']})")
    return " ".join(words_)


def pod_status(pod: Mapping[str, Any], now: datetime, pending_timeout: float) -> tuple[CloudStatus, str]:
    """One pod's state in vcycle's terms, with the cloud's words for it. Pure.

    A deletion timestamp wins; Pending is STARTING, or FAILED once it has been Pending for a reason that does
    not pass by itself (STUCK) for ``pending_timeout`` seconds since the pod was made (its start time may never
    come); Running is RUNNING; Succeeded is STOPPED; Failed is FAILED with its reason and exit code; anything
    else is UNKNOWN.
    """
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase") or ""
    if metadata.get("deletionTimestamp"):
        return CloudStatus.DELETING, f"{phase} deleting".strip()
    found = PHASES.get(phase, CloudStatus.UNKNOWN)
    if phase == "Pending":
        why = _stuck(status)
        if why is None:
            return found, "Pending"
        made = _time(metadata.get("creationTimestamp"))
        waited = (now - made).total_seconds() if made else 0.0
        if waited >= pending_timeout:
            return CloudStatus.FAILED, f"Pending for {waited:.0f} s: {why}"
        return found, f"Pending: {why}"
    if phase in ("Succeeded", "Failed"):
        return found, f"{phase} {_ended(status)}".strip()
    return found, phase or "no phase"


# --- quantities and quotas -------------------------------------------------------------------

_SUFFIX = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def cpu(quantity: str | int | float | None) -> float:
    """A CPU quantity in cores: ``2``, ``1500m``, ``0.5``."""
    if quantity is None:
        return 0.0
    text_ = str(quantity).strip()
    match = re.fullmatch(r"([0-9.]+)([mkMGT]?)", text_)
    if match is None:
        raise ValueError(f"not a CPU quantity: {text_!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def processors_of(pod: Mapping[str, Any]) -> int:
    """The processors a pod asks for: its containers' CPU requests, rounded up (at least 1)."""
    total = 0.0
    for container in (pod.get("spec") or {}).get("containers") or ():
        requests = (container.get("resources") or {}).get("requests") or {}
        try:
            total += cpu(requests.get("cpu"))
        except ValueError:
            continue
    return max(1, math.ceil(total - 1e-9))


def quota_room(quotas: Sequence[Mapping[str, Any]], smallest: int) -> float | None:
    """The processors the namespace's ResourceQuotas leave free: the tightest of requests.cpu, limits.cpu,
    cpu and pods (each free pod counted as ``smallest`` processors), less what they show used; None if no quota
    limits any of them."""
    room: list[float] = []
    for quota in quotas:
        status = quota.get("status") or {}
        hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        for resource in ("requests.cpu", "limits.cpu", "cpu"):
            if resource in hard:
                room.append(cpu(hard[resource]) - cpu(used.get(resource, "0")))
        if "pods" in hard:
            room.append((int(hard["pods"]) - int(used.get("pods", "0"))) * smallest)
    return max(0.0, min(room)) if room else None


# --- errors ----------------------------------------------------------------------------------


def _said(exc: Any) -> tuple[int, str]:
    """An ApiException's status and the message of its Status body (never its headers)."""
    status = int(getattr(exc, "status", 0) or 0)
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message") or body.get("reason") or exc.reason)
    except (TypeError, ValueError):
        message = str(exc.reason or "")
    return status, message


@contextmanager
def _mapped(what: str, *, creating: bool = False) -> Iterator[None]:
    """The client's errors -> vcycle's: a 403 for an exceeded quota is QuotaExceeded; on a create, a pod the
    cluster refuses as it is (400, 422, a quota it must name limits for) is LaunchRejected; a 401, and a 403
    of RBAC, are Unauthorized (what to fix is vcycle's credentials or Role); a 429 is Throttled, with its
    Retry-After; everything else (404 of the namespace, 5xx, no answer) is CloudUnavailable."""
    from kubernetes.client.exceptions import ApiException, OpenApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        status, message = _said(exc)
        said = f"{what}: {status} {message}"
        if status == 403 and "exceeded quota" in message:
            raise QuotaExceeded(said) from exc
        if creating and (status in (400, 422) or (status == 403 and "failed quota" in message)):
            raise LaunchRejected(said) from exc
        if status == 403:
            raise Unauthorized(f"{said} (the Role vcycle needs is in the README)") from exc
        if status == 401:
            raise Unauthorized(f"{what}: 401 the cluster refused the credentials") from exc
        if status == 429:
            raise Throttled(said, retry_after((exc.headers or {}).get("Retry-After"))) from exc
        raise CloudUnavailable(said) from exc
    except (OpenApiException, ConfigException, HTTPError, OSError, ValueError) as exc:
        raise CloudUnavailable(f"{what}: {exc}") from exc


# --- the connector -----------------------------------------------------------------------------

# A Secret holds at most 1 MiB: the script and the token, with room for their keys.
MAX_USER_DATA_BYTES = 1024 * 1024 - 4096
DEADLINE_GRACE_SECONDS = 300  # activeDeadlineSeconds runs this far past the shutdown time: vcycle deletes first
ORPHAN_SECONDS = 600  # a Secret of ours with no Pod, this old, is one whose Pod never came
MOUNT = "/vcycle"
# the pod's command when the user-data had to be gzipped to fit: unpacked into the pod's temporary directory
UNPACK = ('d=$(mktemp -d) && gzip -dc /vcycle/user-data > "$d/user-data" && chmod 700 "$d/user-data" '
          '&& exec "$d/user-data"')
NOT_EVICTED = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "karpenter.sh/do-not-disrupt": "true"}
MANAGED = ("app.kubernetes.io/managed-by", "vcycle")


def label_value(value: str) -> str:
    """``value`` as a label value: as it is where Kubernetes takes it, else a digest of it (the annotations keep
    the exact value)."""
    if LABEL_VALUE.fullmatch(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:40]


class KubernetesConnector:
    """One namespace of one cluster, through one ApiClient (its connection pool shared by the create workers)."""

    api = "kubernetes"
    max_user_data_bytes = MAX_USER_DATA_BYTES

    def __init__(self, api_client: Any, namespace: str, space: str, *,
                 machinetypes: Mapping[str, KubernetesMachinetype] | None = None,
                 memory_mb: Mapping[str, int] | None = None, pending_timeout: float = 900.0, page_size: int = 500,
                 timeout: float = 60.0, manager: str = "", smallest: int = 1) -> None:
        from kubernetes import client

        self.client = api_client
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.space = space
        self.machinetypes = dict(machinetypes or {})
        self.memory_mb = dict(memory_mb or {})  # machinetype -> mb_per_processor
        self.pending_timeout = pending_timeout
        self.page_size = page_size
        self.timeout = timeout
        self.manager = manager
        self.smallest = smallest  # processors of the space's smallest machine: what a free pod of a pods quota is
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}  # uid -> name of the pods of the last listing and the creates since
        self._in_use = 0  # processors of the unfinished pods of the last listing (what quotas count as used)
        self._listed: dict[str, CloudMachine] | None = None  # our pods of the last listing, until tidied

    # --- listing -----------------------------------------------------------------------------

    def _pages(self, call: Any, what: str, **query: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list call; begun again once if the continue token expired (410)."""
        from kubernetes.client.exceptions import ApiException

        for attempt in (1, 2):
            items: list[dict[str, Any]] = []
            token: str | None = None
            try:
                while True:
                    with _mapped(what):
                        answer = call(self.namespace, limit=self.page_size, _continue=token, _preload_content=False,
                                      _request_timeout=self.timeout, **query)
                        page = json.loads(answer.data)
                    items.extend(page.get("items") or ())
                    token = (page.get("metadata") or {}).get("continue")
                    if not token:
                        return items
            except CloudUnavailable as exc:
                cause = exc.__cause__
                if attempt == 1 and isinstance(cause, ApiException) and cause.status == 410:
                    continue  # the listing changed too much while paged: begin again
                raise
        raise AssertionError("unreachable")

    def list_machines(self) -> list[CloudMachine]:
        now = datetime.now(UTC)
        pods = self._pages(self.core.list_namespaced_pod, f"list pods of namespace {self.namespace}")
        machines, names, in_use = [], {}, 0
        for pod in pods:
            metadata = pod.get("metadata") or {}
            status, detail = pod_status(pod, now, self.pending_timeout)
            owner = OwnerTags.from_mapping(metadata.get("annotations") or {})
            finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            processors = processors_of(pod)
            if not finished:
                in_use += processors
            elif owner is None:
                continue  # a foreign pod that finished holds nothing
            if owner is not None:
                names[metadata["uid"]] = metadata["name"]  # only ours are ever deleted
            machines.append(CloudMachine(
                id=metadata["uid"], name=metadata["name"], status=status, owner=owner, processors=processors,
                created_at=_time(metadata.get("creationTimestamp")), detail=detail,
                ip=(pod.get("status") or {}).get("podIP")))
        with self._lock:
            self._names, self._in_use = names, in_use
            self._listed = {m.name: m for m in machines if m.owner is not None}  # for the next tidy
        return machines

    def _tidy(self) -> None:
        """Once after each listing, at its first create or delete (a listing alone changes nothing: ``vcycle plan``
        lists too): the Secrets of this space and manager with no owner are given their Pod as owner, or deleted
        when their Pod never came. A failure is logged and tried again after the next listing."""
        with self._lock:
            ours, self._listed = self._listed, None
        if ours is None:
            return
        now = datetime.now(UTC)
        selector = f"{MANAGED[0]}={MANAGED[1]},{TAG_SPACE}={label_value(self.space)}"
        try:
            secrets = self._pages(self.core.list_namespaced_secret, "list secrets", label_selector=selector)
        except CloudUnavailable as exc:
            log.warning("space=%s secrets not checked for leftovers: %s", self.space, exc)
            return
        for secret in secrets:
            metadata = secret.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            if metadata.get("ownerReferences") or annotations.get(TAG_MANAGER) != self.manager:
                continue
            name = metadata["name"]
            pod = ours.get(name)
            try:
                if pod is not None and pod.owner is not None and pod.owner.request_id == annotations.get(TAG_REQUEST):
                    self._own(name, pod.id)
                    log.info("space=%s secret %s given its pod as owner", self.space, name)
                elif now - (_time(metadata.get("creationTimestamp")) or now) >= timedelta(seconds=ORPHAN_SECONDS):
                    with _mapped(f"delete secret {name}"):
                        self.core.delete_namespaced_secret(name, self.namespace, _request_timeout=self.timeout)
                    log.info("space=%s secret %s deleted: its pod never came", self.space, name)
            except CloudUnavailable as exc:
                log.warning("space=%s leftover secret %s not handled: %s", self.space, name, exc)

    # --- creating ----------------------------------------------------------------------------

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        script = entrypoint(spec.user_data)
        fitted = fit_user_data(script, self.max_user_data_bytes)
        options = self.machinetypes.get(spec.machinetype, KubernetesMachinetype())
        if not options.container_image:
            raise LaunchRejected(f"machinetype {spec.machinetype} has no container_image")
        self._tidy()
        self._secret(spec, fitted)
        pod = self._pod(spec, options, packed=fitted is not script)
        uid = pod["metadata"]["uid"]
        with self._lock:
            self._names[uid] = spec.name
        try:
            self._own(spec.name, uid)
        except CloudUnavailable as exc:  # the pod exists: the next listing gives the secret its owner
            log.warning("space=%s secret %s not yet owned by its pod: %s", self.space, spec.name, exc)
        status, detail = pod_status(pod, datetime.now(UTC), self.pending_timeout)
        return CloudMachine(id=uid, name=spec.name, status=status, owner=spec.owner, processors=spec.processors,
                            created_at=_time(pod["metadata"].get("creationTimestamp")), detail=detail)

    def _metadata(self, spec: LaunchSpec, options: KubernetesMachinetype | None = None) -> dict[str, Any]:
        tags = spec.owner.as_dict()
        labels = {**dict(options.pod_labels if options else ()), **{k: label_value(v) for k, v in tags.items()},
                  MANAGED[0]: MANAGED[1]}
        annotations = {**dict(options.pod_annotations if options else ()), **tags}
        if options is not None:
            annotations.update(NOT_EVICTED)
        return {"name": spec.name, "labels": labels, "annotations": annotations}

    def _secret(self, spec: LaunchSpec, user_data: bytes) -> None:
        data = {"user-data": base64.b64encode(user_data).decode()}
        if spec.token is not None:
            data["token"] = base64.b64encode(spec.token.encode()).decode()
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                "metadata": self._metadata(spec), "data": data}
        if self._made(self.core.create_namespaced_secret, body, f"create secret {spec.name}") is None:
            self._same_request(self.core.read_namespaced_secret, spec, "secret")

    def _pod(self, spec: LaunchSpec, options: KubernetesMachinetype, *, packed: bool) -> dict[str, Any]:
        body = self.pod_body(spec, options, packed=packed, now=datetime.now(UTC))
        made = self._made(self.core.create_namespaced_pod, body, f"create pod {spec.name}")
        return made if made is not None else self._same_request(self.core.read_namespaced_pod, spec, "pod")

    def _made(self, call: Any, body: Mapping[str, Any], what: str) -> dict[str, Any] | None:
        """The object ``call`` made from ``body``; None if one of that name exists (409)."""
        from kubernetes.client.exceptions import ApiException

        with _mapped(what, creating=True):
            try:
                answer = call(self.namespace, body, _preload_content=False, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 409:
                    return None
                raise
            return json.loads(answer.data)  # type: ignore[no-any-return]

    def _same_request(self, read: Any, spec: LaunchSpec, kind: str) -> dict[str, Any]:
        """The existing object named ``spec.name``, if our create of the same request made it (a retried create);
        LaunchRejected if it belongs to another request or is not ours."""
        with _mapped(f"read {kind} {spec.name}"):
            found = json.loads(read(spec.name, self.namespace, _preload_content=False,
                                    _request_timeout=self.timeout).data)
        annotations = (found.get("metadata") or {}).get("annotations") or {}
        if annotations.get(TAG_REQUEST) != spec.request_id or annotations.get(TAG_SPACE) != spec.space:
            raise LaunchRejected(f"a {kind} named {spec.name} exists for another request "
                                 f"({annotations.get(TAG_REQUEST) or 'not vcycle'})")
        return found  # type: ignore[no-any-return]

    def _own(self, name: str, uid: str) -> None:
        """Make the Secret ``name`` owned by the Pod ``uid``: it is deleted with it."""
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}
        with _mapped(f"give secret {name} its owner"):
            self.core.patch_namespaced_secret(name, self.namespace, {"metadata": {"ownerReferences": [owner]}},
                                              _preload_content=False, _request_timeout=self.timeout)

    def pod_body(self, spec: LaunchSpec, options: KubernetesMachinetype, *, packed: bool = False,
                 now: datetime) -> dict[str, Any]:
        """The Pod of one machine (pure but for its arguments)."""
        processors = spec.processors
        memory = processors * self.memory_mb.get(spec.machinetype, 2048)
        requests: dict[str, str] = {"cpu": str(processors), "memory": f"{memory}Mi"}
        if options.ephemeral_storage_gb_per_processor:
            requests["ephemeral-storage"] = f"{options.ephemeral_storage_gb_per_processor * processors}Gi"
        limits: dict[str, str] = {}
        if options.memory_limit_factor is not None:
            limits["memory"] = f"{math.ceil(memory * options.memory_limit_factor)}Mi"
        if options.cpu_limit:
            limits["cpu"] = str(processors)
        if options.gpus:
            requests[options.gpu_resource] = limits[options.gpu_resource] = str(options.gpus)
        plain = {"VCYCLE_MACHINE": spec.name, "VCYCLE_SPACE": spec.space, "VCYCLE_MACHINETYPE": spec.machinetype,
                 "VCYCLE_PROCESSORS": str(processors), "VCYCLE_SHUTDOWN_TIME": str(int(spec.shutdown_at.timestamp()))}
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
        env += [{"name": kind.upper(), "value": spec.metadata[kind]}
                for kind in ("machinefeatures", "jobfeatures", "joboutputs") if kind in spec.metadata]
        if spec.token is not None:
            env.append({"name": "VCYCLE_TOKEN", "valueFrom": {"secretKeyRef": {"name": spec.name, "key": "token"}}})
        command = ["/bin/sh", "-c", UNPACK] if packed else [f"{MOUNT}/user-data"]
        container: dict[str, Any] = {
            "name": "pilot", "image": options.container_image, "imagePullPolicy": options.image_pull_policy,
            "command": command, "env": env,
            "resources": {"requests": requests, **({"limits": limits} if limits else {})},
            "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "vcycle", "mountPath": MOUNT, "readOnly": True}],
        }
        deadline = max(1, math.ceil((spec.shutdown_at - now).total_seconds())) + DEADLINE_GRACE_SECONDS
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never", "activeDeadlineSeconds": deadline, "enableServiceLinks": False,
            "automountServiceAccountToken": options.service_account is not None,
            "securityContext": {"runAsNonRoot": True, "runAsUser": options.run_as_user,
                                "runAsGroup": options.run_as_user, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": [{"name": "vcycle", "secret": {"secretName": spec.name, "defaultMode": 0o555,
                                                      "items": [{"key": "user-data", "path": "user-data"}]}}],
        }
        if options.service_account is not None:
            pod_spec["serviceAccountName"] = options.service_account
        if options.node_selector:
            pod_spec["nodeSelector"] = dict(options.node_selector)
        if options.tolerations:
            pod_spec["tolerations"] = [
                {k: v for k, v in (("key", name), ("operator", operator), ("value", value), ("effect", effect))
                 if v and not (k == "value" and operator == "Exists")}
                for name, operator, value, effect in options.tolerations]
        if options.priority_class:
            pod_spec["priorityClassName"] = options.priority_class
        if options.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": s} for s in options.image_pull_secrets]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": self._metadata(spec, options), "spec": pod_spec}

    # --- deleting ----------------------------------------------------------------------------

    def delete_machine(self, machine_id: str) -> None:
        """Delete the pod with this uid (its Secret goes with it). A uid no listing shows is a pod already gone;
        a 404, or a 409 because the name now has another pod, is success."""
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            name = self._names.get(machine_id)
        if name is None:
            self.list_machines()  # the uid may be of a pod made since the last listing, by another process
            with self._lock:
                name = self._names.get(machine_id)
        self._tidy()
        if name is None:
            return
        body = {"preconditions": {"uid": machine_id}, "propagationPolicy": "Background"}
        with _mapped(f"delete pod {name}"):
            try:
                self.core.delete_namespaced_pod(name, self.namespace, body=body, _preload_content=False,
                                                _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise

    # --- limits ------------------------------------------------------------------------------

    def capacity(self) -> int | None:
        """The processors the namespace's ResourceQuotas allow in all, seen as vcycle counts them: what they
        leave free, plus the unfinished pods of the last listing (ours and foreign, which vcycle subtracts);
        None if no quota limits CPU or pods."""
        quotas = self._pages(self.core.list_namespaced_resource_quota, "list resource quotas")
        room = quota_room(quotas, self.smallest)
        if room is None:
            return None
        with self._lock:
            return math.floor(room + 1e-9) + self._in_use

    def flavors(self) -> Mapping[str, int] | None:
        return None  # a pod takes the processors it requests


def _namespace(options: KubernetesSpace, in_cluster: bool) -> str:
    if options.namespace:
        return options.namespace
    if in_cluster:
        try:
            with open(IN_CLUSTER_NAMESPACE) as stream:
                return stream.read().strip() or "default"
        except OSError:
            return "default"
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=options.kubeconfig)
    except (config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == options.context), current) if options.context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def make_client(options: KubernetesSpace, pool: int) -> tuple[Any, bool]:
    """An ApiClient for a space's keys, and whether it is the in-cluster service account's."""
    from kubernetes import client, config

    configuration = client.Configuration()
    in_cluster = options.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    where = "the in-cluster service account" if in_cluster else f"kubeconfig {options.kubeconfig or '(default)'}"
    if options.kubeconfig is not None and not os.access(options.kubeconfig, os.R_OK):
        why = "does not exist" if not os.path.exists(options.kubeconfig) else "cannot be read by this user"
        raise CloudUnavailable(f"kubeconfig {options.kubeconfig} {why}")
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=options.kubeconfig, context=options.context,
                                    client_configuration=configuration, persist_config=False)
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise CloudUnavailable(f"{where} cannot be used: {exc}") from exc
    token = configuration.api_key.get("authorization")
    if token and "BearerToken" not in configuration.api_key:  # kubernetes 36.0.x look for the token under this key
        configuration.api_key["BearerToken"] = token
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration), in_cluster


def make_connector(space: SpaceConfig, settings: Settings) -> KubernetesConnector:
    """The connector of an ``api = kubernetes`` space."""
    options = options_of(space.connector, KubernetesSpace)
    api_client, in_cluster = make_client(options, settings.create_workers + 4)
    machinetypes = {name: options_of(mt.connector, KubernetesMachinetype) for name, mt in space.machinetypes.items()}
    return KubernetesConnector(
        api_client, _namespace(options, in_cluster), space.name, machinetypes=machinetypes,
        memory_mb={name: mt.mb_per_processor for name, mt in space.machinetypes.items()},
        pending_timeout=options.pending_timeout_seconds, page_size=options.page_size,
        timeout=space.api_timeout_seconds, manager=settings.manager_name,
        smallest=min((mt.min_processors for mt in space.machinetypes.values()), default=1))


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA_BYTES, space=KubernetesSpace,
                         machinetype=KubernetesMachinetype, check_machinetype=_check_machinetype, runs_script=True)
