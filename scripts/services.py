"""Private instances of the servers that vcycle's tests, testbeds and benchmarks need.

PostgreSQL (the store contract, several managers), RabbitMQ (the OpenStack
testbed's message bus) and MariaDB (the DIRAC testbed's databases, Nova's in
the OpenStack benchmark) run from Debian's packages (``make services``
installs them), each as a child process of whoever starts it:

- its data in a directory of its own, made empty at start and removed at stop;
- on loopback ports chosen free at start (RabbitMQ's epmd too: a port of its
  own, never the system's 4369), so that two test sessions on one machine never
  meet, and a system service of the same kind is neither used nor touched;
- stopped by ``Service.stop()``, which waits for every process of its session
  to end (SIGTERM, then SIGKILL) and raises ``ServiceLeft`` if any survives or a
  port still answers.

PostgreSQL refuses to run as root: under root its processes run as the
``postgres`` user of Debian's package (or ``nobody``), and its directory is made
in the system's temporary directory, where that user can reach it (as
``pg_virtualenv`` does), rather than under the caller's private one.

    .venv/bin/python scripts/services.py postgresql|rabbitmq|mariadb   (starts one, prints its URL; Ctrl-C stops it)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import testbed_processes

PACKAGES = {"postgresql": "postgresql", "rabbitmq": "rabbitmq-server", "mariadb": "mariadb-server"}
START_TRIES = 3  # a free port can be taken by someone else before the server binds it: try again on another


class ServiceUnavailable(RuntimeError):
    """The service cannot start here; the message says why."""


class ServiceLeft(RuntimeError):
    """A stopped service left a process or a listening port behind."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def session_members(sid: int) -> list[int]:
    """The live processes (zombies not counted) of session ``sid``."""
    found = []
    for entry in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(entry) as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.split("/")[2]))
    return found


@dataclass
class Service:
    """One running server: where it listens, its processes, and the directory it owns."""

    name: str
    directory: Path
    ports: dict[str, int]
    url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # what its own clients need (RabbitMQ's rabbitmqctl)
    on_stop: Callable[[], None] | None = None  # a clean shutdown asked for first (RabbitMQ: rabbitmqctl stop)
    restart: Callable[[float], None] | None = None  # stop, stay down this many seconds, start again (PostgreSQL)

    def leftovers(self) -> list[str]:
        """What of it still runs or listens (empty once stopped)."""
        left = [f"{name} (pid {pid})" for name, process in self.processes.items()
                for pid in session_members(process.pid)]
        left += [f"port {port} ({what})" for what, port in self.ports.items() if listening(port)]
        return left

    def stop(self, wait: float = 10.0) -> None:
        """Stop every process of the service and remove its directory; ServiceLeft if anything survived
        ``wait`` seconds."""
        if self.on_stop is not None and self.processes:
            try:
                self.on_stop()
            except (OSError, subprocess.SubprocessError):
                pass  # the signals below stop it all the same
        started = dict(self.processes)
        testbed_processes.stop(self.processes)
        self.processes = started  # kept to be checked
        deadline = time.monotonic() + wait
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.leftovers()
        self.processes = {}
        shutil.rmtree(self.directory, ignore_errors=True)
        if left:
            raise ServiceLeft(f"{self.name} left behind: {', '.join(left)}")


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _wait(service: Service, ready: Callable[[], bool], seconds: float, log: Path) -> None:
    """Until ``ready()``; ServiceUnavailable (with the end of its log) if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        if any(p.poll() is not None for p in service.processes.values()):
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    service.stop()
    raise ServiceUnavailable(f"{service.name} did not start within {seconds:.0f}s: " + " | ".join(tail))


def _retry(start: Callable[[], Service]) -> Service:
    for attempt in range(START_TRIES):
        try:
            return start()
        except ServiceUnavailable:
            if attempt + 1 == START_TRIES:
                raise
    raise AssertionError("unreachable")


# --- PostgreSQL --------------------------------------------------------------------------------

def _postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps one per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _server_user() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as when we are root (it refuses root itself); None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceUnavailable("running as root, and there is no postgres or nobody user to run PostgreSQL as")


def postgresql(parent: Path) -> Service:
    """A private PostgreSQL: superuser ``postgres``, no password, on a free port of 127.0.0.1."""
    binaries = _postgres_bin()
    if binaries is None:
        raise ServiceUnavailable("PostgreSQL is not installed (make services installs Debian's postgresql)")
    user = _server_user()
    return _retry(lambda: _postgresql(binaries, parent, user))


def _postgresql(binaries: Path, parent: Path, user: pwd.struct_passwd | None) -> Service:
    if user is None:
        directory = _fresh(parent / "postgresql")
    else:  # a directory the server's own user can reach (the caller's may be private to root)
        directory = Path(tempfile.mkdtemp(prefix="vcycle-postgresql-"))
        os.chown(directory, user.pw_uid, user.pw_gid)
    data, log = directory / "data", directory / "postgresql.log"
    as_user: dict[str, object] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}
    done = subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--locale=C.UTF-8", "--no-sync", "--no-instructions"], capture_output=True, text=True,
                          env=env, cwd=directory, **as_user)  # type: ignore[call-overload]
    if done.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise ServiceUnavailable(f"initdb failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    port = free_port()
    service = Service("PostgreSQL", directory, {"postgresql": port},
                      f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    def launch() -> None:
        with open(log, "ab") as stream:  # fsync off: a test database need not survive a power cut
            service.processes["postgres"] = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={directory}", "-c", "fsync=off", "-c", "full_page_writes=off",
                 "-c", "synchronous_commit=off", "-c", "max_connections=300"],
                stdout=stream, stderr=stream, start_new_session=True, env=env, cwd=directory, **as_user)

    def fast_shutdown() -> None:  # SIGINT: clients are disconnected (SIGTERM would wait for them)
        postmaster = service.processes["postgres"]
        postmaster.send_signal(signal.SIGINT)
        postmaster.wait(timeout=20)

    pg_isready = str(binaries / "pg_isready")

    def ready() -> bool:
        return subprocess.run([pg_isready, "-q", "-h", "127.0.0.1", "-p", str(port)], check=False).returncode == 0

    def restart(down: float) -> None:
        fast_shutdown()
        time.sleep(down)
        launch()
        _wait(service, ready, 60, log)

    launch()
    service.on_stop = fast_shutdown
    service.restart = restart
    _wait(service, ready, 60, log)
    return service


# --- RabbitMQ ----------------------------------------------------------------------------------

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


def rabbitmq(parent: Path) -> Service:
    """A private RabbitMQ broker (user guest, password guest) with an epmd of its own, on free ports."""
    if not RABBITMQ_SERVER.exists() or shutil.which("epmd") is None:
        raise ServiceUnavailable("RabbitMQ is not installed (make services installs Debian's rabbitmq-server)")
    return _retry(lambda: _rabbitmq(parent))


def _rabbitmq(parent: Path) -> Service:
    directory = _fresh(parent / "rabbitmq")
    ports = {"amqp": free_port(), "distribution": free_port(), "epmd": free_port()}
    node = f"vcycle-{ports['amqp']}@localhost"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(directory),
        "RABBITMQ_BASE": str(directory), "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"), "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        "RABBITMQ_NODENAME": node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(ports["amqp"]), "RABBITMQ_DIST_PORT": str(ports["distribution"]),
        "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(ports["epmd"]),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    (directory / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{ports['amqp']}\n"
                                             "loopback_users = none\n")
    (directory / "enabled_plugins").write_text("[].\n")
    service = Service("RabbitMQ", directory, ports, f"rabbit://guest:guest@127.0.0.1:{ports['amqp']}/", env=env)
    logs = directory / "logs"
    testbed_processes.start(service.processes, logs, "epmd",
                            ["epmd", "-address", "127.0.0.1", "-port", str(ports["epmd"])], env=env, cwd=directory)
    _wait(service, lambda: listening(ports["epmd"]), 20, logs / "epmd.log")
    testbed_processes.start(service.processes, logs, "rabbitmq", [str(RABBITMQ_SERVER)], env=env, cwd=directory)

    def stop_cleanly() -> None:
        subprocess.run([str(RABBITMQCTL), "stop"], env=env, cwd=directory, capture_output=True, timeout=60,
                       check=False)

    service.on_stop = stop_cleanly
    _wait(service, lambda: listening(ports["amqp"]), 120, logs / "rabbitmq.log")
    return service


# --- MariaDB -----------------------------------------------------------------------------------

def mariadb(parent: Path, users: Mapping[str, str] | None = None) -> Service:
    """A private MariaDB on a free port of 127.0.0.1: ``root`` without a password from 127.0.0.1 and the socket
    (``service.ports``, ``service.directory / 'mysqld.sock'``), and ``users`` (name -> password) with every right."""
    for tool in ("mariadbd", "mariadb-install-db", "mariadb"):
        if _sbin(tool) is None:
            raise ServiceUnavailable(f"{tool} is not installed (make services installs Debian's mariadb-server)")
    return _retry(lambda: _mariadb(parent, dict(users or {})))


def _sbin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found is None and Path("/usr/sbin", tool).exists():
        found = f"/usr/sbin/{tool}"
    return found


def _mariadb(parent: Path, users: dict[str, str]) -> Service:
    directory = _fresh(parent / "mariadb")
    data, socket_path, log = directory / "data", directory / "mysqld.sock", directory / "mariadb.err"
    data.mkdir()
    done = subprocess.run([str(_sbin("mariadb-install-db")), "--no-defaults", "--user=root", f"--datadir={data}",
                           "--auth-root-authentication-method=normal", "--skip-test-db"],
                          capture_output=True, text=True)  # --no-defaults: not the system's my.cnf
    if done.returncode != 0:
        raise ServiceUnavailable(f"mariadb-install-db failed: {(done.stderr or done.stdout).strip()[-300:]}")
    port = free_port()
    (directory / "my.cnf").write_text(textwrap.dedent(f"""\
        [mysqld]
        datadir={data}
        socket={socket_path}
        pid-file={directory}/mariadb.pid
        bind-address=127.0.0.1
        port={port}
        user=root
        log-error={log}
        skip-name-resolve
        innodb_flush_log_at_trx_commit=2
        max_connections=500
        """))
    service = Service("MariaDB", directory, {"mariadb": port}, f"root@127.0.0.1:{port}")
    testbed_processes.start(service.processes, directory, "mariadbd",
                            [str(_sbin("mariadbd")), f"--defaults-file={directory}/my.cnf"], cwd=directory)
    _wait(service, lambda: socket_path.exists() and listening(port), 60, log)
    statements = ["CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'",
                  "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"]
    for name, password in users.items():
        for host in ("127.0.0.1", "localhost"):
            statements += [f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'",
                           f"GRANT ALL ON *.* TO '{name}'@'{host}'"]
    done = subprocess.run([str(_sbin("mariadb")), f"--socket={socket_path}", "-uroot", "-e",
                           "; ".join([*statements, "FLUSH PRIVILEGES"])], capture_output=True, text=True)
    if done.returncode != 0:
        service.stop()
        raise ServiceUnavailable(f"MariaDB's users not made: {done.stderr.strip()}")
    return service


STARTERS: dict[str, Callable[[Path], Service]] = {"postgresql": postgresql, "rabbitmq": rabbitmq,
                                                  "mariadb": mariadb}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in STARTERS:
        raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(STARTERS)}")
    started = time.monotonic()
    service = STARTERS[sys.argv[1]](Path(tempfile.mkdtemp(prefix=f"vcycle-{sys.argv[1]}-")))
    print(f"{service.name} up in {time.monotonic() - started:.1f}s: {service.url} (data in {service.directory})",
          flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


if __name__ == "__main__":
    main()
