"""A real Slurm cluster on this machine for vcycle's Slurm tests and benchmark, from Debian 12's packages.

munged with a key and socket of its own, slurmctld, and a slurmd per node
name (each on a port of its own; the nodes' sizes are declared, not real:
``config_overrides``), all on loopback and in the foreground as children of
whoever starts them, everything under one directory:

- partition ``main`` (default): c1, c2 (4 CPUs, 8000 MB, features cpu,avx2),
  and late1 (feature ``late`` too), declared but not started;
- partition ``gpu``: g1 (8 CPUs, 16000 MB, two fake GPUs: character devices
  made with mknod, so that slurmd counts them);
- partition ``dyn``: dynamic nodes (``slurmd -Z`` with feature ``dyn``), as
  vcycle's machines join; configless (``enable_configless``), so a machine
  needs only the controller's address;
- partition ``cloud``: cl1-cl3, ``State=CLOUD``, powered up and down by
  slurmctld through the ResumeProgram and SuspendProgram the caller gives
  (``start(..., resume=..., suspend=...)``), else programs that only log;
- slurmrestd on a loopback port with JWT authentication (``rest_url``,
  ``token()``), where Debian's slurmrestd and JWT plugin are installed: it
  runs as the ``slurm`` user (it refuses root) with ``SLURM_JWT=daemon``.

What it takes (see the Slurm probe's report): munged checks that every
parent of its socket is world-executable (so the directory is made under the
system's temporary directory, with a short path); ``SlurmctldHost`` with an
address; ``DefMemPerCPU`` (else a job without ``--mem`` asks for a whole
node); ``PrivateData=cloud`` (else powered-down cloud nodes are hidden);
fake GPUs need device files; every client call needs a timeout.

    .venv/bin/python scripts/slurm_testbed.py     (starts one, prints its SLURM_CONF, Ctrl-C stops it;
                                                  VCYCLE_SLURM_TESTBED=DIR has the tests use it)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import testbed_processes

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
STATIC = {"c1": "CPUs=4 RealMemory=8000 Feature=cpu,avx2", "c2": "CPUs=4 RealMemory=8000 Feature=cpu,avx2",
          "late1": "CPUs=4 RealMemory=8000 Feature=cpu,avx2,late",
          "g1": "CPUs=8 RealMemory=16000 Gres=gpu:fake:2 Feature=gpu"}
STARTED = ("c1", "c2", "g1")
CLOUD = ("cl1", "cl2", "cl3")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _rest_available() -> bool:
    """Whether slurmrestd and Slurm's JWT plugin are installed (Debian's slurmrestd, slurm-wlm-jwt-plugin)."""
    return shutil.which("slurmrestd", path=os.environ.get("PATH", "") + ":" + PATH) is not None and any(
        Path(d, "slurm-wlm", "auth_jwt.so").exists() for d in ("/usr/lib/x86_64-linux-gnu",
                                                               "/usr/lib/aarch64-linux-gnu", "/usr/lib"))


class TestbedUnavailable(Exception):
    """The testbed cannot run here; the message says why."""


def unavailable_reason() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool, path=os.environ.get("PATH", "") + ":" + PATH) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian's slurmctld, slurmd, slurm-client, munge: make services)"
    if os.geteuid() != 0:
        return "slurmd runs as root: the Slurm testbed needs root"
    return None


def _ports(count: int) -> list[int]:
    found: list[int] = []
    sockets = []
    while len(found) < count:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        found.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return found


@dataclass
class Testbed:
    directory: Path
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.directory / "etc" / "slurm.conf"

    @property
    def controller(self) -> str:
        """HOST:PORT of slurmctld, for configless slurmds (``--conf-server``)."""
        return f"127.0.0.1:{self.ports['slurmctld']}"

    @property
    def rest_url(self) -> str:
        """slurmrestd's address (JWT authentication: ``token()``)."""
        return f"http://127.0.0.1:{self.ports['slurmrestd']}"

    def token(self, user: str = "root", seconds: int = 3600) -> str:
        """A JWT for ``user`` from ``scontrol token``."""
        return self.run("scontrol", "token", f"username={user}", f"lifespan={seconds}").strip().removeprefix(
            "SLURM_JWT=")

    @property
    def env(self) -> dict[str, str]:
        """The environment Slurm's commands need to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", PATH) + ":" + PATH}

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> str:
        """One Slurm command against this cluster; its stdout (CalledProcessError if it fails and ``check``)."""
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
        return done.stdout

    def sbatch(self, *options: str, seconds: int = 600) -> int:
        """Submit a job (``sleep seconds``) with these sbatch options; its id."""
        out = self.run("sbatch", "--parsable", "-o", "/dev/null", *options, "--wrap", f"sleep {seconds}")
        return int(out.strip().split(";")[0])

    def jobs(self) -> list[dict[str, object]]:
        return list(json.loads(self.run("squeue", "--json"))["jobs"])

    def nodes(self) -> dict[str, dict[str, object]]:
        return {n["name"]: n for n in json.loads(self.run("sinfo", "--json"))["nodes"]}

    def clear(self) -> None:
        """Cancel every job and wait until none is pending or running."""
        self.run("scancel", "--user=root", check=False)
        deadline = time.monotonic() + 60
        while any(j["job_state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for j in self.jobs()):
            if time.monotonic() > deadline:
                raise TestbedUnavailable("jobs still there 60 s after scancel")
            time.sleep(0.2)

    def stop(self) -> None:
        self.run("scancel", "--user=root", check=False, timeout=10)
        testbed_processes.stop(self.processes)
        for stray in _strays(self.conf):  # slurmstepd outlives its slurmd; a dynamic machine's slurmd too
            try:
                os.kill(stray, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


def _strays(conf: Path) -> list[int]:
    """Processes whose command line or environment names this cluster's directory."""
    found = []
    marker = str(conf.parents[1]).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = Path(f"/proc/{entry.name}/cmdline").read_bytes() + Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:
            continue
        if marker in seen:
            found.append(int(entry.name))
    return found


def _wait(what: str, ready: Callable[[], object], seconds: float, testbed: Testbed) -> None:
    testbed_processes.wait_ready(what, ready, seconds, testbed.processes, testbed.directory / "logs",
                                 TestbedUnavailable)


def _logging_program(path: Path, log: Path) -> Path:
    path.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $0 $*" >> {log}\n')
    path.chmod(0o755)
    return path


def start(*, resume: Path | None = None, suspend: Path | None = None, slurmd_timeout: int = 30,
          suspend_time: int = 30, resume_timeout: int = 120) -> Testbed:
    """Start a cluster in a new directory under the system's temporary directory (munged's rules).
    TestbedUnavailable says why it cannot."""
    reason = unavailable_reason()
    if reason is not None:
        raise TestbedUnavailable(reason)
    directory = Path(tempfile.mkdtemp(prefix="vcslurm-", dir="/tmp"))
    directory.chmod(0o755)
    etc, logs, state, munge, run = (directory / d for d in ("etc", "logs", "state", "munge", "run"))
    for d in (etc, logs, state / "ctld", munge / "run", munge / "etc", run, directory / "dev"):
        d.mkdir(parents=True)
    (munge).chmod(0o755)
    (munge / "run").chmod(0o755)
    (munge / "etc").chmod(0o700)
    key = munge / "etc" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    names = ["slurmctld", "slurmd", "slurmrestd", *STATIC, *CLOUD]
    ports = dict(zip(names, _ports(len(names)), strict=True))
    testbed = Testbed(directory, ports)
    for index, name in enumerate(("nvidia0", "nvidia1")):
        try:
            os.mknod(directory / "dev" / name, 0o666 | 0o020000, os.makedev(1, 3 + 2 * index))
        except OSError:
            (directory / "dev" / name).touch()
    resume = resume or _logging_program(etc / "resume", logs / "power.log")
    suspend = suspend or _logging_program(etc / "suspend", logs / "power.log")
    sock = munge / "run" / "munge.socket.2"
    jwt = etc / "jwt.key"
    jwt.write_bytes(os.urandom(32))
    jwt.chmod(0o600)
    rest = _rest_available()
    nodes = [f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={ports[n]} {spec} State=UNKNOWN"
             for n, spec in STATIC.items()]
    nodes += [f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={ports[n]} CPUs=4 RealMemory=8000 "
              "Feature=cloud,avx512 State=CLOUD" for n in CLOUD]
    testbed.conf.write_text("\n".join([
        "ClusterName=vcycletest", "SlurmctldHost=localhost(127.0.0.1)", f"SlurmctldPort={ports['slurmctld']}",
        f"SlurmdPort={ports['slurmd']}", "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
        *(["AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={jwt}"] if rest else []),
        "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={state / 'ctld'}", f"SlurmdSpoolDir={state}/%n",
        f"SlurmctldPidFile={run}/slurmctld.pid", f"SlurmdPidFile={run}/slurmd-%n.pid",
        f"SlurmctldLogFile={logs}/slurmctld.log", f"SlurmdLogFile={logs}/slurmd-%n.log", "SlurmctldDebug=info",
        "SlurmdDebug=info", "MailProg=/bin/true", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=1000",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "MpiDefault=none", "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2", "SlurmdParameters=config_overrides", "ReturnToService=2",
        f"SlurmdTimeout={slurmd_timeout}", "CommunicationParameters=NoAddrCache", "GresTypes=gpu",
        "PrivateData=cloud", "MaxNodeCount=32", "SlurmctldParameters=enable_configless,cloud_reg_addrs",
        f"ResumeProgram={resume}", f"SuspendProgram={suspend}", f"SuspendTime={suspend_time}",
        "SuspendTimeout=20", f"ResumeTimeout={resume_timeout}", "ResumeRate=0", "SuspendRate=0",
        "SuspendExcParts=main,gpu,dyn", "MinJobAge=30", *nodes, "NodeSet=dynset Feature=dyn",
        "PartitionName=main Nodes=c[1-2],late1 Default=YES MaxTime=2-00:00:00 State=UP",
        "PartitionName=gpu Nodes=g1 MaxTime=1-00:00:00 State=UP",
        "PartitionName=dyn Nodes=dynset MaxTime=1-00:00:00 State=UP",
        "PartitionName=cloud Nodes=cl[1-3] MaxTime=1-00:00:00 State=UP", ""]))
    (etc / "gres.conf").write_text(f"NodeName=g1 Name=gpu Type=fake File={directory}/dev/nvidia[0-1]\n")
    (etc / "plugstack.conf").write_text("")
    begin = testbed_processes.start
    try:
        begin(testbed.processes, logs, "munged", [
            "munged", "-F", f"--socket={sock}", f"--key-file={key}", f"--pid-file={munge / 'run' / 'munged.pid'}",
            f"--log-file={logs / 'munged.log'}", f"--seed-file={munge / 'etc' / 'munged.seed'}"], env=testbed.env)
        _wait("munged", sock.exists, 10, testbed)
        begin(testbed.processes, logs, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(testbed.conf)],
              env=testbed.env)
        _wait("slurmctld", lambda: "UP" in testbed.run("scontrol", "ping", check=False, timeout=3), 30, testbed)
        for node in STARTED:
            (state / node).mkdir()
            begin(testbed.processes, logs, f"slurmd-{node}", ["slurmd", "-D", "-f", str(testbed.conf), "-N", node],
                  env=testbed.env)
        _wait("the static nodes to be idle",
              lambda: all(testbed.nodes()[n]["state"] == "idle" for n in STARTED), 60, testbed)
        if rest:
            begin(testbed.processes, logs, "slurmrestd", [
                "setpriv", "--reuid=slurm", "--regid=slurm", "--clear-groups", "slurmrestd", "-f", str(testbed.conf),
                "-a", "rest_auth/jwt", "-s", "openapi/v0.0.38", f"127.0.0.1:{ports['slurmrestd']}"],
                env={**testbed.env, "SLURM_JWT": "daemon"})
            _wait("slurmrestd", lambda: socket.create_connection(("127.0.0.1", ports["slurmrestd"]), 1).close()
                  is None, 20, testbed)
    except BaseException:
        testbed.stop()
        raise
    (directory / "testbed.json").write_text(json.dumps({"ports": ports}))
    return testbed


def attach(directory: Path) -> Testbed:
    """A cluster already running in ``directory`` (started by ``main``)."""
    return Testbed(directory, json.loads((directory / "testbed.json").read_text())["ports"])


def main() -> None:
    started = time.monotonic()
    try:
        testbed = start()
    except TestbedUnavailable as exc:
        sys.exit(f"error: {exc}")
    print(f"Slurm up in {time.monotonic() - started:.1f}s: SLURM_CONF={testbed.conf} "
          f"(VCYCLE_SLURM_TESTBED={testbed.directory})", flush=True)
    testbed_processes.serve_until_signal(testbed.stop)


if __name__ == "__main__":
    main()
