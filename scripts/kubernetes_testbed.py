"""A real Kubernetes control plane on this machine for vcycle's Kubernetes tests and benchmark.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (a fake
kubelet: it registers a node and moves pods through their phases by the stages
of ``scripts/kubernetes/kwok-stages.yaml``), built from the Go module proxy by
``scripts/kubernetes/build.sh`` (``make kubernetes-testbed``) into a cache
outside the clone. ``start(directory)`` makes a CA, a serving certificate,
service-account keys and a static token per component, starts the five on free
loopback ports, registers one fake node ``kwok-node-0`` (16 CPUs, 64 GiB, 110
pods, no taint), waits until it is Ready and the ``default`` service account
exists, and returns a ``Testbed``; ``stop()`` stops only what it started.

What it takes, learnt the hard way (see the Kubernetes probe's report): etcd
3.5.13 or newer (client-go's watch-list streams need RequestWatchProgress; with
3.4 the clients churn and kwok lags by seconds); kube-controller-manager with
``--use-service-account-credentials=true`` (else its controllers lack the rights
to work), which fills in quota status, makes the ``default`` service account
(no pod is admitted before it exists) and garbage-collects what a deleted pod
owned; kube-scheduler, as kwok binds nothing; and a node selected by kwok's
annotation.

    .venv/bin/python scripts/kubernetes_testbed.py DIR    (starts it and waits; Ctrl-C stops it;
                                                          VCYCLE_KUBERNETES_TESTBED=DIR has the tests use it)
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testbed_processes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vcycle.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "kubernetes" / "build.sh"
STAGES = ROOT / "scripts" / "kubernetes" / "kwok-stages.yaml"
NODE = "kwok-node-0"
COMPONENTS = ("admin", "controller-manager", "scheduler", "kwok")
# the identities of the static tokens: admin and kwok in system:masters, the others as RBAC's bootstrap roles know
USERS = {"admin": ("admin", "system:masters"), "controller-manager": ("system:kube-controller-manager", ""),
         "scheduler": ("system:kube-scheduler", ""), "kwok": ("kwok", "system:masters")}


class TestbedUnavailable(Exception):
    """The testbed cannot run here; the message says why."""


def binaries() -> Path | None:
    """The directory of the five built binaries, or None if they are not all built."""
    if not BUILD.exists():
        return None
    found = subprocess.run(["bash", str(BUILD), "--where"], capture_output=True, text=True)
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def unavailable_reason() -> str | None:
    """Why the testbed cannot start here, or None."""
    if binaries() is None:
        return ("the Kubernetes control plane is not built (make kubernetes-testbed builds it from the Go module "
                "proxy: about 20 minutes the first time)")
    return None


@dataclass
class Testbed:
    directory: Path
    port: int
    tokens: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.directory / "pki" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (system:masters)."""
        return self.directory / "etc" / "admin.kubeconfig"

    def write_kubeconfig(self, path: Path, token: str, *, namespace: str = "default", user: str = "vcycle") -> Path:
        """A kubeconfig for ``token`` (a service account's, say), context ``testbed``."""
        write_kubeconfig(path, self.server, self.ca, token, user=user, namespace=namespace)
        return path

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call to the apiserver as admin: the decoded JSON answer (urllib.error.HTTPError on a 4xx/5xx); a
        PATCH is a JSON merge patch."""
        return _request(self.server, self.ca, self.tokens["admin"], method, path, body)

    def add_node(self, name: str, *, cpu: int, memory: str, pods: int) -> None:
        """Register a fake node kwok runs (no taint), and wait until it is Ready."""
        resources = {"cpu": str(cpu), "memory": memory, "pods": str(pods)}
        self.request("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "status": {"allocatable": resources, "capacity": resources}})

        def ready() -> bool:
            node = self.request("GET", f"/api/v1/nodes/{name}")
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))

        _wait(f"the kwok node {name} to be Ready", ready, 60, self)

    def stop(self) -> None:
        testbed_processes.stop(self.processes)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, *, user: str, namespace: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "testbed",
              "clusters": [{"name": "testbed", "cluster": {"server": server, "certificate-authority": str(ca)}}],
              "users": [{"name": user, "user": {"token": token}}],
              "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user,
                                                            "namespace": namespace}}]}
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    path.chmod(0o600)


def _request(server: str, ca: Path, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = urllib.request.Request(server + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": kind})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as answer:
        text = answer.read()
    return json.loads(text) if text.strip().startswith(b"{") else text.decode()


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _certificates(pki: Path) -> None:
    """A CA, the apiserver's serving certificate and the service-account signing key pair."""
    pki.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcycle-testbed-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = _key()
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
             *(x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"))]
    serving = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.SubjectAlternativeName(names), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .sign(ca_key, hashes.SHA256()))
    sa = _key()
    files = {"ca.crt": ca.public_bytes(serialization.Encoding.PEM), "ca.key": _pem_key(ca_key),
             "apiserver.crt": serving.public_bytes(serialization.Encoding.PEM), "apiserver.key": _pem_key(key),
             "sa.key": _pem_key(sa),
             "sa.pub": sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)}
    for name, content in files.items():
        (pki / name).write_bytes(content)
        (pki / name).chmod(0o600)


def _wait(what: str, ready: Callable[[], object], seconds: float, testbed: Testbed) -> None:
    testbed_processes.wait_ready(what, ready, seconds, testbed.processes, testbed.directory / "logs",
                                 TestbedUnavailable)


def start(directory: Path) -> Testbed:
    """Start the control plane in ``directory`` (made empty first). TestbedUnavailable says why it cannot."""
    bin_dir = binaries()
    if bin_dir is None:
        raise TestbedUnavailable(unavailable_reason() or "not built")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    pki, logs = directory / "pki", directory / "logs"
    _certificates(pki)
    tokens = {name: secrets.token_hex(16) for name in COMPONENTS}
    (pki / "tokens.csv").write_text("".join(f'{tokens[n]},{USERS[n][0]},{n},"{USERS[n][1]}"\n' for n in COMPONENTS))
    etcd, peer, api, kwok = (free_port() for _ in range(4))
    testbed = Testbed(directory, api, tokens)
    for name in COMPONENTS:
        write_kubeconfig(directory / "etc" / f"{name}.kubeconfig", testbed.server, testbed.ca, tokens[name],
                         user=name, namespace="default")
    run = testbed_processes.start
    try:
        run(testbed.processes, logs, "etcd", [
            str(bin_dir / "etcd"), "--name", "testbed", "--data-dir", str(directory / "etcd-data"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--quota-backend-bytes", str(2 << 30), "--unsafe-no-fsync", "--log-level", "warn"])
        _wait("etcd", lambda: urllib.request.urlopen(f"http://127.0.0.1:{etcd}/health", timeout=2).status == 200,
              30, testbed)
        run(testbed.processes, logs, "kube-apiserver", [
            str(bin_dir / "kube-apiserver"), "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api}", f"--etcd-servers=http://127.0.0.1:{etcd}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=Node,RBAC",
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=1"])
        _wait("kube-apiserver /readyz", lambda: testbed.request("GET", "/readyz") == "ok", 120, testbed)
        run(testbed.processes, logs, "kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={directory / 'etc' / 'controller-manager.kubeconfig'}",
            "--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--controllers=*", "--concurrent-gc-syncs=5", "--v=1"])
        run(testbed.processes, logs, "kube-scheduler", [
            str(bin_dir / "kube-scheduler"), f"--kubeconfig={directory / 'etc' / 'scheduler.kubeconfig'}",
            "--secure-port=0", "--leader-elect=false", "--v=1"])
        run(testbed.processes, logs, "kwok", [
            str(bin_dir / "kwok"), f"--kubeconfig={directory / 'etc' / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16", "--node-ip=10.1.0.1", f"--server-address=127.0.0.1:{kwok}",
            f"--config={STAGES}"])
        testbed.add_node(NODE, cpu=16, memory="64Gi", pods=110)
        _wait("the default service account",
              lambda: bool(testbed.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")), 60, testbed)
    except BaseException:
        testbed.stop()
        raise
    (directory / "testbed.json").write_text(json.dumps({"port": api, "tokens": tokens}))
    return testbed


def attach(directory: Path) -> Testbed:
    """A testbed already running in ``directory`` (started by ``main``): VCYCLE_KUBERNETES_TESTBED=DIR makes
    the test session use it instead of starting its own."""
    found = json.loads((directory / "testbed.json").read_text())
    return Testbed(directory, found["port"], found["tokens"])


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".kubernetes" / "run").resolve()
    started = time.monotonic()
    try:
        testbed = start(directory)
    except TestbedUnavailable as exc:
        sys.exit(f"error: {exc}")
    print(f"Kubernetes up in {time.monotonic() - started:.1f}s: {testbed.server}, KUBECONFIG={testbed.kubeconfig}",
          flush=True)
    testbed_processes.serve_until_signal(testbed.stop)


if __name__ == "__main__":
    main()
