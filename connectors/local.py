"""``api = local``: machines as supervised process groups on this host.

A machine is a directory ``WORKDIR/NAME`` holding ``machine.json`` (its tags,
processors, times and process), ``user-data`` (the script part of its
rendered user-data, run as its entrypoint), ``console.log`` and, once it
ends, ``exit-status``. It runs in its own session (stopped as a whole), with
its directory as working directory, ``HOME`` and ``TMPDIR``, an environment
that names it (``VCYCLE_MACHINE``, ``VCYCLE_PROCESSORS``: its CPU budget,
``MACHINEFEATURES``, ``JOBFEATURES``, ``JOBOUTPUTS``, its token as
``VCYCLE_TOKEN``) and coreutils'
``timeout`` ending it at its shutdown time. Machines do not depend on the
daemon: they outlive its restart and are found again from their
directories, never started twice.

``isolation = bwrap`` runs the entrypoint under bubblewrap in its own mount,
PID, IPC and UTS namespaces with only its directory (and a private /tmp)
writable. The network is shared with the host on purpose: a machine must
reach vcycle's endpoint to heartbeat, and a new network namespace would
have no route to it.

States: a live process group is RUNNING; an ``exit-status`` file means it
ended by itself (STOPPED); a process gone without one was killed (FAILED);
a ``deleting`` marker with the process still there is DELETING.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vcycle.connectors.base import ConnectorPlugin, entrypoint, fit_user_data
from vcycle.core.model import CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import choice, key, options_of, text
from vcycle.core.sections import Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSpace:
    """The keys of an ``api = local`` space."""

    workdir: str | None = key(text, None, "where machines' directories live; default STATE_DIR/local/SPACE")
    isolation: str = key(choice("none", "bwrap"), "none",
                         "bwrap: each machine in its own mount and PID namespaces (bubblewrap)")
    ca_bundle: str | None = key(text, None,
                                "CA file machines trust for vcycle's endpoint (CURL_CA_BUNDLE, SSL_CERT_FILE)")


MAX_USER_DATA_BYTES = 16 * 1024 * 1024
GRACE_SECONDS = 10.0
RAW_STATES = {"running": CloudStatus.RUNNING, "exited": CloudStatus.STOPPED, "killed": CloudStatus.FAILED,
              "deleting": CloudStatus.DELETING}
# The wrapper: the entrypoint under timeout, then its exit status written atomically.
WRAPPER = ('seconds="$1"; shift; timeout --kill-after=10 "$seconds" "$@" > console.log 2>&1; '
           'echo $? > exit-status.new && mv exit-status.new exit-status')


def _process_start(pid: int) -> str | None:
    """The process's start time (to tell it from a later process with the same pid), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


class LocalConnector:
    """One local space: the machines under ``workdir``."""

    api = "local"
    max_user_data_bytes = MAX_USER_DATA_BYTES

    def __init__(self, space: str, workdir: str, *, processors_limit: int | None = None, isolation: str = "none",
                 ca_bundle: str | None = None, base_url: str = "", grace_seconds: float = GRACE_SECONDS) -> None:
        self.space = space
        self.workdir = workdir
        self.processors_limit = processors_limit
        self.isolation = isolation
        self.ca_bundle = ca_bundle
        self.base_url = base_url
        self.grace_seconds = grace_seconds
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()
        if isolation == "bwrap" and shutil.which("bwrap") is None:
            raise CloudUnavailable("isolation = bwrap, but bubblewrap (bwrap) is not installed")

    # --- reading -------------------------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        self._reap()
        try:
            entries = sorted(os.scandir(self.workdir), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CloudUnavailable(f"cannot read {self.workdir}: {exc.strerror}") from exc
        found = []
        for entry in entries:
            machine = self._view(entry.path)
            if machine is not None:
                found.append(machine)
        return found

    def _view(self, directory: str) -> CloudMachine | None:
        try:
            with open(os.path.join(directory, "machine.json")) as stream:
                saved = json.load(stream)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            log.warning("local machine %s unreadable, ignored: %s", directory, exc)
            return None
        raw, detail = self._raw_state(directory, saved)
        return CloudMachine(id=saved["name"], name=saved["name"], status=RAW_STATES[raw],
                            owner=OwnerTags.from_mapping(saved["tags"]), processors=saved["processors"],
                            created_at=datetime.fromisoformat(saved["created_at"]), detail=detail)

    def _raw_state(self, directory: str, saved: Mapping[str, Any]) -> tuple[str, str]:
        alive = saved.get("pid") is not None and _process_start(saved["pid"]) == saved.get("pid_start")
        if os.path.exists(os.path.join(directory, "deleting")) and alive:
            return "deleting", "being stopped"
        try:
            with open(os.path.join(directory, "exit-status")) as stream:
                status = stream.read().strip()
        except FileNotFoundError:
            status = None
        if status is not None:
            return "exited", "timed out at its shutdown time" if status in ("124", "137") else f"exited {status}"
        if alive or saved.get("pid") is None:
            return "running", ""
        return "killed", "process gone without an exit status"

    def _reap(self) -> None:
        with self._lock:
            for name, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[name]

    # --- creating ------------------------------------------------------------------------

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        script = entrypoint(fit_user_data(spec.user_data, self.max_user_data_bytes))
        directory = os.path.join(self.workdir, spec.name)
        with self._lock:
            existing = self._view(directory)
            if existing is not None:
                if existing.owner is not None and existing.owner.request_id == spec.request_id:
                    return existing  # a retried create: the same machine
                raise LaunchRejected(f"a local machine named {spec.name} exists for another request")
            used = sum(m.processors or 1 for m in self.list_machines()
                       if m.status in (CloudStatus.RUNNING, CloudStatus.STARTING, CloudStatus.DELETING))
            limit = self.capacity()
            if limit is not None and used + spec.processors > limit:
                raise QuotaExceeded(f"this host's local space uses {used} of {limit} processors")
            try:
                self._start(directory, spec, script)
            except OSError as exc:
                shutil.rmtree(directory, ignore_errors=True)
                raise CloudUnavailable(f"cannot start local machine {spec.name}: {exc}") from exc
        made = self._view(directory)
        assert made is not None
        return made

    def _start(self, directory: str, spec: LaunchSpec, script: bytes) -> None:
        os.makedirs(os.path.join(directory, "tmp"), mode=0o700)
        path = os.path.join(directory, "user-data")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "wb") as stream:
            stream.write(script)
        now = datetime.now(UTC)
        saved: dict[str, Any] = {"name": spec.name, "tags": spec.owner.as_dict(), "processors": spec.processors,
                                 "created_at": now.isoformat(), "shutdown_at": spec.shutdown_at.isoformat(),
                                 "pid": None, "pid_start": None}
        self._save(directory, saved)  # before the process: a crash here leaves a machine that is listed
        seconds = max(1, int((spec.shutdown_at - now).total_seconds()))
        command = ["/bin/sh", "-c", WRAPPER, "vcycle-machine", str(seconds), *self._command(directory)]
        child = subprocess.Popen(command, cwd=directory, env=self._environment(directory, spec),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True, close_fds=True)
        self._children[spec.name] = child
        saved["pid"], saved["pid_start"] = child.pid, _process_start(child.pid)
        self._save(directory, saved)

    def _command(self, directory: str) -> list[str]:
        entry = os.path.join(directory, "user-data")
        if self.isolation != "bwrap":
            return [entry]
        return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--bind", directory, directory, "--chdir", directory, "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--new-session", entry]

    def _environment(self, directory: str, spec: LaunchSpec) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": directory,
               "TMPDIR": os.path.join(directory, "tmp"), "LANG": "C.UTF-8", "VCYCLE_MACHINE": spec.name,
               "VCYCLE_SPACE": spec.space, "VCYCLE_MACHINETYPE": spec.machinetype,
               "VCYCLE_PROCESSORS": str(spec.processors),
               "VCYCLE_SHUTDOWN_TIME": str(int(spec.shutdown_at.timestamp()))}
        for kind in ("machinefeatures", "jobfeatures", "joboutputs"):
            if kind in spec.metadata:
                env[kind.upper()] = spec.metadata[kind]
        if spec.token is not None:
            env["VCYCLE_TOKEN"] = spec.token
        if self.ca_bundle:
            env["CURL_CA_BUNDLE"] = env["SSL_CERT_FILE"] = self.ca_bundle
        return env

    def _save(self, directory: str, saved: Mapping[str, Any]) -> None:
        temporary = os.path.join(directory, ".machine.json.new")
        with open(temporary, "w") as stream:
            json.dump(saved, stream)
        os.replace(temporary, os.path.join(directory, "machine.json"))

    # --- deleting ------------------------------------------------------------------------

    def delete_machine(self, machine_id: str) -> None:
        """Stop the machine's process group (SIGTERM, then SIGKILL after the grace) and remove it."""
        directory = os.path.join(self.workdir, os.path.basename(machine_id))
        try:
            with open(os.path.join(directory, "machine.json")) as stream:
                saved = json.load(stream)
        except FileNotFoundError:
            shutil.rmtree(directory, ignore_errors=True)
            return
        except (OSError, ValueError) as exc:
            raise CloudUnavailable(f"cannot read local machine {machine_id}: {exc}") from exc
        open(os.path.join(directory, "deleting"), "a").close()
        pid = saved.get("pid")
        if pid is not None and _process_start(pid) == saved.get("pid_start"):
            self._stop_session(pid)
        with self._lock:
            child = self._children.pop(machine_id, None)
        if child is not None:
            child.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)

    def drain_machine(self, machine_id: str) -> None:
        """SIGTERM to the machine's entrypoint alone, not to its pilot: the shipped templates take it as a drain
        (the pilot is told through VCYCLE_DRAIN_FILE, and runs on). A machine gone already is left alone."""
        entry = os.path.join(self.workdir, os.path.basename(machine_id), "user-data")
        for pid in entrypoints(entry):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _stop_session(self, sid: int) -> None:
        """Every process of the machine's session (timeout puts the entrypoint in a group of its own)."""
        for sig, wait in ((signal.SIGTERM, self.grace_seconds), (signal.SIGKILL, 5.0)):
            members = session_members(sid)
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self._reap()
                if not session_members(sid):
                    return
                time.sleep(0.05)

    # --- limits ----------------------------------------------------------------------------

    def capacity(self) -> int | None:
        return self.processors_limit if self.processors_limit is not None else (os.cpu_count() or 1)

    def flavors(self) -> Mapping[str, int] | None:
        return None  # a local machine takes the processors it is given


def entrypoints(entry: str) -> list[int]:
    """The processes running the script ``entry`` (its interpreter's first argument; not the wrapper, timeout or
    bwrap, which name it later), in or out of a PID namespace."""
    found = []
    for process in os.scandir("/proc"):
        if not process.name.isdigit():
            continue
        try:
            with open(f"/proc/{process.name}/cmdline", "rb") as stream:
                argv = stream.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1] == entry.encode():
            found.append(int(process.name))
    return found


def session_members(sid: int) -> list[int]:
    """The live processes (not zombies) of session ``sid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def make_connector(space: SpaceConfig, settings: Settings) -> LocalConnector:
    """The connector of an ``api = local`` space."""
    options = options_of(space.connector, LocalSpace)
    workdir = options.workdir or os.path.join(settings.state_dir, "local", space.name)
    return LocalConnector(space.name, workdir, processors_limit=space.processors_limit, isolation=options.isolation,
                          ca_bundle=options.ca_bundle)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA_BYTES, space=LocalSpace,
                         runs_script=True)
