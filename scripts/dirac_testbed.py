"""A real DIRAC 9 workload management system on this machine, for vcycle's DIRAC tests and benchmark.

A private MariaDB (scripts/services.py: its own data directory, socket and a
free loopback port; a server of the machine's own is left alone), DIRAC's JobManager,
OptimizationMind, Matcher, ResourceStatus and ProxyManager services and the
Optimizers executor, all reading one local configuration file (no
Configuration server), with a throwaway CA, a host certificate for
localhost and a user. ``start(directory)`` makes all that, starts the
processes one after the other (Matcher and OptimizationMind race on
TaskQueueDB's tables if started together), marks the site and CE Active in
ResourceStatus (else JobScheduling fails every job) and uploads the pilot
user's proxy; ``stop()`` stops only what it started. DIRAC is installed by
``make dirac-testbed`` into ``.dirac/venv``.

What it takes, learnt from ../shared/dirac's probe: DIRAC 9 assumes a DiracX
server unless ``/DiracX/DisabledVOs`` names the VO; task-queue matching needs
CPUTime, which DIRAC computes only for queues with maxCPUTime and SI00; a
proxy uploaded to the ProxyManager must carry no DIRAC group. DISET services
bind every interface (DIRAC's ServiceReactor), not only loopback.

    .venv/bin/python scripts/dirac_testbed.py DIR     (starts it and waits; Ctrl-C or SIGTERM stops it)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import services
import testbed_processes

from vcycle.testing import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".dirac" / "venv"
VO = "vo"
SITE = "LCG.Vcycle.org"
OTHER_SITE, OTHER_CE = "LCG.Other.org", "ce.other.example.org"
CE = "ce.vcycle.example.org"
SPACE, MACHINETYPE, VCYCLE_CONFIG = "sp", "dirac-pilot", "vcycle.conf"
PILOT_TAG = "vcycle-pilots"  # the queue takes only jobs with this tag, so that other tests' jobs stay out
USER_DN = "/O=vcycle-testbed/CN=testuser"
HOST_DN = "/O=vcycle-testbed/CN=localhost"
SERVICES = (  # started in this order, one at a time: (system, component)
    ("Framework", "ProxyManager"), ("ResourceStatus", "ResourceStatus"),
    ("WorkloadManagement", "OptimizationMind"), ("WorkloadManagement", "JobManager"),
    ("WorkloadManagement", "Matcher"),
)
DELEGATION = ["FullDelegation", "LimitedDelegation", "PrivateLimitedDelegation"]
DATABASES = {
    "JobDB": "WorkloadManagementSystem", "JobLoggingDB": "WorkloadManagementSystem",
    "TaskQueueDB": "WorkloadManagementSystem", "PilotAgentsDB": "WorkloadManagementSystem",
    "SandboxMetadataDB": "WorkloadManagementSystem", "ResourceStatusDB": "ResourceStatusSystem",
    "StorageManagementDB": "StorageManagementSystem", "ProxyDB": "FrameworkSystem",
}


class TestbedUnavailable(RuntimeError):
    """The testbed cannot start here; the message says why."""


def unavailable_reason() -> str | None:
    """Why the testbed cannot start here, or None."""
    if not (VENV / "bin" / "dirac-service").exists():
        return f"DIRAC is not installed in {VENV} (make dirac-testbed)"
    for tool in ("mariadbd", "mariadb-install-db", "openssl"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (make services installs mariadb-server)"
    return None


@dataclass
class Testbed:
    directory: Path
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    database: services.Service | None = None  # the private MariaDB, when this process started it

    @property
    def mysql_socket(self) -> Path:
        """The MariaDB's socket, for the root client (``mariadb --socket=... -uroot``)."""
        return self.directory / "mariadb" / "mysqld.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment a DIRAC client of this testbed runs with (in DIRAC's virtualenv)."""
        return {**os.environ, "DIRAC_ROOT_PATH": str(self.directory / "server"),
                "X509_CERT_DIR": str(self.directory / "pki" / "certificates")}

    @property
    def python(self) -> str:
        return str(VENV / "bin" / "python")

    def run(self, code: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        """Run ``code`` in DIRAC's virtualenv against this testbed; its stdout (RuntimeError on failure)."""
        done = subprocess.run([self.python, "-c", textwrap.dedent(code), *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"DIRAC client failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def stop(self) -> None:
        """Stop what start() started, the database last: SIGTERM, then SIGKILL."""
        testbed_processes.stop(self.processes)
        if self.database is not None:
            self.database.stop()
            self.database = None


def _pki(d: Path) -> None:
    """A throwaway CA (hashed, as DIRAC's CALocation wants), a host certificate for localhost, a user."""
    pki = d / "pki"
    (pki / "certificates").mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/O=vcycle-testbed/CN=vcycle testbed CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (pki / "host.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,"
                                  "IP:127.0.0.1\n")
    (pki / "user.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=clientAuth\n")
    for who, dn in (("host", HOST_DN), ("user", USER_DN)):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}key.pem", "-out", f"{who}.csr",
                "-subj", dn)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "30", "-extfile", f"{who}.ext", "-out", f"{who}cert.pem")
        (pki / f"{who}key.pem").chmod(0o400)
    shutil.copy(pki / "ca.pem", pki / "certificates" / "ca.pem")
    openssl("rehash", "certificates")


def _mariadb(testbed: Testbed) -> None:
    """The private MariaDB with DIRAC's user and the schemas of its databases."""
    try:
        testbed.database = services.mariadb(testbed.directory, users={"Dirac": "diracpw"})
    except services.ServiceUnavailable as exc:
        raise TestbedUnavailable(str(exc)) from None
    testbed.ports["mariadb"] = testbed.database.ports["mariadb"]
    site = Path(subprocess.run([testbed.python, "-c", "import DIRAC, os; print(os.path.dirname(DIRAC.__file__))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    client = ["mariadb", f"--socket={testbed.mysql_socket}", "-uroot"]
    for name, system in DATABASES.items():
        subprocess.run([*client, "-e", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        with open(site / system / "DB" / f"{name}.sql", "rb") as schema:
            subprocess.run([*client, name], stdin=schema, check=True, capture_output=True)


def cfg_text(tree: dict[str, object], indent: str = "") -> str:
    """DIRAC's CFG format for a nested dict (strings and lists as values)."""
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key}", f"{indent}{{", cfg_text(value, indent + "  ").rstrip("\n"), f"{indent}}}"]
        else:
            text = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
            lines.append(f"{indent}{key} = {text}")
    return "\n".join(line for line in lines if line) + "\n"


def configuration(d: Path, ports: dict[str, int]) -> dict[str, object]:
    """The one configuration every process of the testbed reads."""
    databases = {system: {name: {"DBName": name} for name, where in DATABASES.items() if where == f"{system}System"}
                 for system in ("Framework", "ResourceStatus", "StorageManagement", "WorkloadManagement")}
    systems: dict[str, dict[str, object]] = {system: {"Databases": dbs} for system, dbs in databases.items()}
    for system, component in SERVICES:
        section = systems[system]
        rules: dict[str, object] = {"Default": "authenticated"}
        if component == "ProxyManager":  # who may fetch proxies (the SiteDirector's host: FullDelegation)
            rules.update(getProxy=DELEGATION, getVOMSProxy=DELEGATION)
        elif component == "Matcher":
            rules["getActiveTaskQueues"] = "JobAdministrator"
        section.setdefault("Services", {})[component] = {  # type: ignore[index]
            "Port": ports[component], "Authorization": rules}
        section.setdefault("URLs", {})[component] = (  # type: ignore[index]
            f"dips://localhost:{ports[component]}/{system}/{component}")
    systems["WorkloadManagement"]["Agents"] = {"SiteDirector": {
        "VO": VO, "Site": SITE, "CETypes": "Vcycle", "SendPilotAccounting": "False", "MaxPilotsToSubmit": 10,
        "WorkDirectory": f"{d}/work/sitedirector"}}
    systems["WorkloadManagement"]["Executors"] = {
        "Optimizers": {"Load": ["JobPath", "JobSanity", "InputData", "JobScheduling"]},
        "JobPath": {}, "JobSanity": {}, "InputData": {}, "JobScheduling": {}}
    return {
        "DIRAC": {"Setup": "VcycleTestbed", "VirtualOrganization": VO, "Hostname": "localhost",
                  "Security": {"CALocation": f"{d}/pki/certificates", "CertFile": f"{d}/pki/hostcert.pem",
                               "KeyFile": f"{d}/pki/hostkey.pem"}},
        "DiracX": {"DisabledVOs": VO},  # DIRAC 9 assumes a DiracX server unless the VO is listed here
        "Registry": {
            "DefaultGroup": "vo_user",
            "Users": {"testuser": {"DN": USER_DN, "Email": "testuser@localhost"}},
            "Groups": {"vo_user": {"Users": "testuser", "Properties": "NormalUser", "VO": VO},
                       "vo_pilot": {"Users": "testuser", "Properties": ["GenericPilot", "LimitedDelegation"],
                                    "VO": VO}},
            "Hosts": {"localhost": {"DN": HOST_DN, "Properties": [
                "TrustedHost", "JobAdministrator", "FullDelegation", "Operator", "SiteManager", "GenericPilot"]}},
            "VO": {VO: {"VOAdmin": "testuser"}},
        },
        "Operations": {"Defaults": {"Pilot": {"GenericPilotGroup": "vo_pilot", "GenericPilotUser": "testuser"}}},
        "Systems": {"Databases": {"Host": "127.0.0.1", "Port": ports["mariadb"], "User": "Dirac",
                                  "Password": "diracpw"}, **systems},
        # the Vcycle CE's queue hands pilots to vcycle's space SPACE, machinetype MACHINETYPE, as configured in
        # VCYCLE_CONFIG (written by whoever runs vcycle against this testbed)
        # a second site, Active in ResourceStatus too, for jobs that ask for another site (no SiteDirector serves it)
        "Resources": {"Sites": {"LCG": {
            SITE: {"CE": CE, "CEs": {CE: {"CEType": "Vcycle", "Queues": {"default": {
                "maxCPUTime": 2880, "SI00": 2500, "MaxTotalJobs": 20, "MaxWaitingJobs": 10,
                "Tag": PILOT_TAG, "RequiredTag": PILOT_TAG,
                "VcycleConfig": f"{d}/{VCYCLE_CONFIG}", "VcycleSpace": SPACE, "VcycleMachinetype": MACHINETYPE}}}}},
            OTHER_SITE: {"CE": OTHER_CE, "CEs": {OTHER_CE: {"CEType": "Vcycle", "Queues": {"default": {
                "maxCPUTime": 2880, "SI00": 2500}}}}},
        }}},
    }


def _configure(d: Path, ports: dict[str, int]) -> None:
    (d / "server" / "etc").mkdir(parents=True, exist_ok=True)
    (d / "work" / "sitedirector").mkdir(parents=True, exist_ok=True)
    (d / "server" / "etc" / "dirac.cfg").write_text(cfg_text(configuration(d, ports)))


def _start(testbed: Testbed, name: str, command: list[str]) -> None:
    testbed_processes.start(testbed.processes, testbed.directory / "logs", name, command, env=testbed.env,
                            cwd=testbed.directory)


def _wait(predicate: Callable[[], object], seconds: float, what: str) -> None:
    try:
        wait_for(predicate, seconds, what)
    except AssertionError as exc:
        raise TestbedUnavailable(str(exc)) from None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(directory: Path) -> Testbed:
    """Start the testbed in ``directory`` (made empty first). TestbedUnavailable says why it cannot."""
    reason = unavailable_reason()
    if reason is not None:
        raise TestbedUnavailable(reason)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "logs").mkdir(parents=True)
    ports = {component: free_port() for _, component in SERVICES}
    testbed = Testbed(directory, ports)
    try:
        _pki(directory)
        _mariadb(testbed)
        _configure(directory, ports)
        for system, component in SERVICES:
            _start(testbed, f"{system}_{component}", [str(VENV / "bin" / "dirac-service"), f"{system}/{component}"])
            _wait(lambda port=ports[component]: _listening(port), 90, f"{system}/{component}")
        _start(testbed, "WorkloadManagement_Optimizers",
               [str(VENV / "bin" / "dirac-executor"), "WorkloadManagement/Optimizers"])
        for element in ("Site", "Resource"):
            subprocess.run([str(VENV / "bin" / "dirac-rss-sync"), f"--element={element}", "--defaultStatus=Active",
                            "-o", "/DIRAC/Security/UseServerCertificate=yes"], env=testbed.env, check=True,
                           capture_output=True, timeout=120, cwd=directory)
        # the upload authenticates with the very proxy it uploads, as dirac-proxy-init would
        testbed.run(UPLOAD_PROXY, str(directory), env={"X509_USER_PROXY": str(directory / "pilot.proxy")})
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError, OSError) as exc:
        testbed.stop()
        raise TestbedUnavailable(f"the DIRAC testbed did not start: {exc}; see {directory}/logs") from exc
    except BaseException:
        testbed.stop()
        raise
    (directory / "testbed.json").write_text(json.dumps({"ports": ports}))
    return testbed


def attach(directory: Path) -> Testbed:
    """A testbed already running in ``directory`` (started by ``main``); never stopped by the caller."""
    return Testbed(directory, json.loads((directory / "testbed.json").read_text())["ports"])


# The start of a DIRAC client script acting as the testbed's user: ``user_jobs(directory)`` is a JobManagerClient
# with a proxy of the user in the vo_user group (DIRAC 9's dirac-proxy-init needs DiracX: made here instead).
USER_CLIENT = """
import json, sys, time
import DIRAC
DIRAC.initialize(require_auth=False)
from DIRAC.Core.Security.X509Chain import X509Chain
from DIRAC.WorkloadManagementSystem.Client.JobManagerClient import JobManagerClient
from DIRAC.WorkloadManagementSystem.Client.MatcherClient import MatcherClient

def user_jobs(directory):
    chain = X509Chain()
    chain.loadChainFromFile(directory + "/pki/usercert.pem")
    chain.loadKeyFromFile(directory + "/pki/userkey.pem")
    proxy = directory + "/user.proxy"
    assert chain.generateProxyToFile(proxy, 12 * 3600, diracGroup="vo_user")["OK"]
    return JobManagerClient(proxyLocation=proxy)
"""


UPLOAD_PROXY = """
import sys
import DIRAC
DIRAC.initialize(require_auth=False)
from DIRAC.Core.Security.X509Chain import X509Chain
from DIRAC.FrameworkSystem.Client.ProxyManagerClient import gProxyManager
pki = sys.argv[1] + "/pki"
chain = X509Chain()
assert chain.loadChainFromFile(pki + "/usercert.pem")["OK"] and chain.loadKeyFromFile(pki + "/userkey.pem")["OK"]
path = sys.argv[1] + "/pilot.proxy"
made = chain.generateProxyToFile(path, 7 * 86400)  # no DIRAC group: the ProxyManager refuses proxies with one
assert made["OK"], made
proxy = X509Chain()
proxy.loadProxyFromFile(path)
uploaded = gProxyManager.uploadProxy(proxy=proxy)
assert uploaded["OK"], uploaded
"""


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".dirac" / "run").resolve()
    started = time.monotonic()
    testbed = start(directory)
    print(f"DIRAC up in {time.monotonic() - started:.0f}s in {directory}: DIRAC_ROOT_PATH={directory}/server, "
          f"ports {testbed.ports}", flush=True)
    testbed_processes.serve_until_signal(testbed.stop)


if __name__ == "__main__":
    main()
