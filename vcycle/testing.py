"""Test helpers that are part of vcycle's public surface.

``FakeClock`` gives the time to code that asks for it, and moves only when
told. ``FakeConnector`` is a cloud in memory (or in a JSON file, so that it
outlives a killed process) with boot delays, quotas, injected failures,
vanishing machines and per-call latency; it passes the same connector
contract suite as every real connector. ``api = fake`` spaces use it, so
configurations for simulations, demos and tests validate and run like any
other. Anyone writing a connector or a simulation may use these.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from vcycle.clock import Clock, utc_now
from vcycle.connectors.base import ConnectorPlugin, fit_user_data
from vcycle.core.model import ON_DEMAND, SPOT, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import integer, key, number, options_of, text, words
from vcycle.core.sections import Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, ConnectorError, LaunchRejected, NoCapacity, QuotaExceeded


def _flavors(value: str) -> dict[str, int]:
    result = {}
    for item in words(value):
        name, _, vcpus = item.partition(":")
        result[name] = integer(1)(vcpus) if vcpus else 1
    return result


MAX_USER_DATA_BYTES = 64 * 1024



@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FakeSpace:
    """The keys of an ``api = fake`` space."""

    quota_processors: int | None = key(integer(0), None, "the processors quota the fake cloud reports and enforces")
    state_file: str | None = key(text, None, "keep the fake cloud in this JSON file, so it outlives the process")
    boot_seconds: float = key(number(0.0), 0.0, "seconds a new machine stays starting")
    latency_seconds: float = key(number(0.0), 0.0, "seconds every API call takes")
    flavors: dict[str, int] = key(_flavors, {}, "NAME:VCPUS ... the fake cloud offers")


class FakeClock:
    """A clock that starts at ``start`` (aware UTC) and moves only by ``advance``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")

    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now


#: The fake cloud's own state words -> ours, as every connector maps its cloud's (anything else: UNKNOWN).
STATE_MAP: dict[str, CloudStatus] = {
    "booting": CloudStatus.STARTING, "running": CloudStatus.RUNNING, "halted": CloudStatus.STOPPED,
    "broken": CloudStatus.FAILED, "terminating": CloudStatus.DELETING, "terminated": CloudStatus.DELETED,
}
_WORD_OF = {status: word for word, status in STATE_MAP.items()}


@dataclasses.dataclass(slots=True)
class FakeMachine:
    """A machine of the fake cloud, in the fake cloud's own state words (``state``); slotted, as a benchmark's
    cloud holds 200,000 of them in the measured process."""

    id: str
    name: str
    processors: int
    created_at: datetime
    state: str = "booting"
    owner: OwnerTags | None = None
    running_at: datetime | None = None  # becomes running at this time, if still booting
    flavor: str | None = None
    detail: str = ""
    user_data: bytes = b""
    zone: str | None = None
    _home: Machines | None = dataclasses.field(default=None, init=False, repr=False, compare=False)  # its cloud's
    _view: CloudMachine | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _detail: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name[0] == "_":  # its own bookkeeping
            return
        try:
            home = self._home
        except AttributeError:  # being made: __init__ sets the fields before _home
            return
        if home is not None:  # its cloud lists it anew
            home.edits += 1
            home.changed.append(self.name)

    def view(self, now: datetime) -> CloudMachine:
        status = STATE_MAP.get(self.state, CloudStatus.UNKNOWN)
        if status is CloudStatus.STARTING and self.running_at is not None and now >= self.running_at:
            status = CloudStatus.RUNNING
        cached = self._view
        if cached is not None and cached.status is status and self._detail is self.detail:
            return cached
        view = CloudMachine(self.id, self.name, status, self.owner, self.processors, self.created_at,
                            self.detail or status.value.upper(), flavor=self.flavor,
                            zone=self.zone)
        object.__setattr__(self, "_view", view)
        object.__setattr__(self, "_detail", self.detail)
        return view


class Machines(dict[str, FakeMachine]):
    """The fake cloud's machines by name. Every change to the mapping or to one of its machines is counted in
    ``edits`` and its machine's name added to ``changed``, so that a listing views anew only what changed since the
    lister's last look (a fake cloud's listing costs the test process little, as a real cloud's listing costs it
    nothing but the parse)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edits = 0
        self.changed: list[str] = list(self)  # names, in the order of their changes
        for machine in self.values():
            object.__setattr__(machine, "_home", self)

    def _changed(self, name: str) -> None:
        self.edits += 1
        self.changed.append(name)

    def __setitem__(self, name: str, machine: FakeMachine) -> None:
        object.__setattr__(machine, "_home", self)
        super().__setitem__(name, machine)
        self._changed(name)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._changed(name)

    def pop(self, name: str, *default: Any) -> Any:
        self._changed(name)
        return super().pop(name, *default)

    def popitem(self) -> tuple[str, FakeMachine]:
        name, machine = super().popitem()
        self._changed(name)
        return name, machine

    def clear(self) -> None:
        for name in list(self):
            self._changed(name)
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, machine in dict(*args, **kwargs).items():
            self[name] = machine

    def setdefault(self, name: str, machine: FakeMachine | None = None) -> FakeMachine:
        if name not in self:
            assert machine is not None
            self[name] = machine
        return self[name]


class FakeConnector:
    """A cloud in memory, or in ``state_file``, with the knobs tests need.

    - ``boot_seconds``: machines are STARTING this long after creation, then RUNNING.
    - ``quota_processors``: creates beyond it raise QuotaExceeded; ``capacity()`` reports it.
    - ``latency_seconds``: every call sleeps this long (outside the lock, so calls overlap).
    - ``inject(op, error, times)``: the next ``times`` calls of ``op`` raise ``error``.
    - ``full``: flavors, or offering keys (``m5.large@zone-a/spot``), whose creates raise NoCapacity
      (``created_on`` lists every create's flavor, or its offering's key where it names a zone or capacity type).
    - ``set_status``, ``set_state``, ``vanish``, ``add_foreign``: change the cloud behind vcycle's back.
    - ``calls``: every call made, as (operation, argument), in order.
    """

    api = "fake"
    max_user_data_bytes = MAX_USER_DATA_BYTES

    def __init__(self, *, clock: Clock = utc_now, boot_seconds: float = 0.0, quota_processors: int | None = None,
                 latency_seconds: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 state_file: str | None = None, flavors: Mapping[str, int] | None = None) -> None:
        self.clock = clock
        self.boot_seconds = boot_seconds
        self.quota_processors = quota_processors
        self.latency_seconds = latency_seconds
        self.sleep = sleep
        self.state_file = state_file
        self.flavor_sizes = dict(flavors or {})
        self.machines: dict[str, FakeMachine] = Machines()
        # the machines viewed, their views in their order, the booting ones' running times, how far ``changed`` was read
        self._views: tuple[Machines, dict[str, CloudMachine], dict[str, datetime], list[int]] | None = None
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, list[ConnectorError]] = {}
        self.full: set[str] = set()  # flavors the cloud has no capacity for (NoCapacity, as EC2's ICE)
        self.created_on: list[str | None] = []  # the flavor of every create call, in order
        self._lock = threading.Lock()
        self._counter = 0

    # --- the connector protocol ------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        with self._call("list", ""):
            now = self.clock()
            machines = self.machines
            if not isinstance(machines, Machines):  # a plain dict a test put there: viewed anew each time
                return [m.view(now) for m in machines.values()]
            if self._views is None or self._views[0] is not machines:
                self._views = (machines, {}, {}, [0])
                machines.changed.extend(machines)
            _, views, booting, read = self._views
            due = [name for name, at in booting.items() if at <= now]  # booted since: running now
            changed = machines.changed[read[0]:]
            read[0] += len(changed)
            for name in dict.fromkeys((*changed, *due)):
                machine = machines.get(name)
                booting.pop(name, None)
                if machine is None:
                    views.pop(name, None)
                    continue
                views[name] = machine.view(now)
                if machine.state == "booting" and machine.running_at is not None and machine.running_at > now:
                    booting[name] = machine.running_at
            return list(views.values())

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        with self._call("create", spec.name):
            now = self.clock()
            user_data = fit_user_data(spec.user_data, self.max_user_data_bytes)
            offering = spec.offering
            self.created_on.append(offering.key if offering.zone or offering.capacity else spec.flavor)
            if spec.flavor in self.full or offering.key in self.full:
                raise NoCapacity(f"InsufficientInstanceCapacity: there is no {offering} capacity now")
            existing = self.machines.get(spec.name)
            if existing is not None:
                if existing.owner is not None and existing.owner.request_id == spec.request_id:
                    return existing.view(now)  # a retried create: the same machine
                raise LaunchRejected(f"a machine named {spec.name} exists for another request")
            used = sum(m.processors for m in self.machines.values())
            if self.quota_processors is not None and used + spec.processors > self.quota_processors:
                raise QuotaExceeded(f"quota exceeded for cores: requested {spec.processors}, "
                                    f"used {used} of {self.quota_processors}")
            self._counter += 1
            machine = FakeMachine(f"fake-{self._counter:06d}-{spec.name}", spec.name, spec.processors, now,
                                  owner=spec.owner, running_at=now + timedelta(seconds=self.boot_seconds),
                                  flavor=spec.flavor, user_data=user_data, zone=spec.zone)
            self.machines[spec.name] = machine
            return machine.view(now)

    def delete_machine(self, machine_id: str) -> None:
        with self._call("delete", machine_id):
            for name, machine in list(self.machines.items()):
                if machine.id == machine_id:  # by its id only, as every cloud deletes
                    del self.machines[name]

    def capacity(self) -> int | None:
        with self._call("capacity", ""):
            return self.quota_processors

    def flavors(self) -> Mapping[str, int] | None:
        with self._call("flavors", ""):
            return dict(self.flavor_sizes) if self.flavor_sizes else None  # without flavors: it cannot tell

    # --- knobs for tests ----------------------------------------------------------------

    def inject(self, op: str, error: ConnectorError, times: int = 1) -> None:
        """The next ``times`` calls of ``op`` (list, create, delete, capacity, flavors) raise ``error``."""
        with self._state():
            self.failures.setdefault(op, []).extend([error] * times)

    def set_status(self, name: str, status: CloudStatus, detail: str = "") -> None:
        """The cloud moves the machine to the state it shows as ``status``."""
        self.set_state(name, _WORD_OF.get(status, status.value), detail)

    def set_state(self, name: str, word: str, detail: str = "") -> None:
        """The cloud moves the machine to its own state ``word`` (one of STATE_MAP, or any other)."""
        with self._state():
            machine = self.machines[name]
            machine.state, machine.detail, machine.running_at = word, detail, None

    def vanish(self, name: str) -> None:
        """The machine disappears without vcycle deleting it."""
        with self._state():
            self.machines.pop(name, None)

    def add_foreign(self, name: str, processors: int = 1) -> None:
        """A machine in the space that vcycle did not create."""
        with self._state():
            self.machines[name] = FakeMachine(f"foreign-{name}", name, processors, self.clock(), state="running")

    def ours(self) -> list[CloudMachine]:
        """The machines tagged by any vcycle (a test's view, not a counted call)."""
        with self._state():
            now = self.clock()
            return [m.view(now) for m in self.machines.values() if m.owner is not None]

    # --- machinery ------------------------------------------------------------------

    @contextmanager
    def _call(self, op: str, argument: str) -> Iterator[None]:
        if self.latency_seconds:
            self.sleep(self.latency_seconds)
        with self._state():
            self.calls.append((op, argument))
            pending = self.failures.get(op)
            if pending:
                raise pending.pop(0)
            yield

    @contextmanager
    def _state(self) -> Iterator[None]:
        with self._lock:
            if self.state_file is None:
                yield
                return
            with open(self.state_file + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._load()
                try:
                    yield
                finally:
                    self._save()

    def _load(self) -> None:
        assert self.state_file is not None
        try:
            with open(self.state_file) as stream:
                data = json.load(stream)
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise CloudUnavailable(f"fake cloud {self.state_file} is corrupt: {exc}") from exc
        self._counter = data["counter"]
        self.failures = {}
        self.machines = Machines({m["name"]: _machine_from(m) for m in data["machines"]})

    def _save(self) -> None:
        assert self.state_file is not None
        data = {"counter": self._counter, "machines": [_machine_to(m) for m in self.machines.values()]}
        directory = os.path.dirname(os.path.abspath(self.state_file))
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".fake-cloud-")
        with os.fdopen(fd, "w") as stream:
            json.dump(data, stream)
        os.replace(temporary, self.state_file)


def _machine_to(m: FakeMachine) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "processors": m.processors, "created_at": m.created_at.isoformat(),
            "state": m.state, "owner": dataclasses.asdict(m.owner) if m.owner else None,
            "running_at": m.running_at.isoformat() if m.running_at else None, "flavor": m.flavor,
            "detail": m.detail, "user_data": base64.b64encode(m.user_data).decode()}


def _machine_from(d: dict[str, Any]) -> FakeMachine:
    return FakeMachine(d["id"], d["name"], d["processors"], datetime.fromisoformat(d["created_at"]),
                       d["state"], OwnerTags(**d["owner"]) if d["owner"] else None,
                       datetime.fromisoformat(d["running_at"]) if d["running_at"] else None, d["flavor"],
                       d["detail"], base64.b64decode(d["user_data"]))


def make_connector(space: SpaceConfig, settings: Settings) -> FakeConnector:
    """The connector of an ``api = fake`` space."""
    options = options_of(space.connector, FakeSpace)
    return FakeConnector(boot_seconds=options.boot_seconds, quota_processors=options.quota_processors,
                         latency_seconds=options.latency_seconds, state_file=options.state_file,
                         flavors=options.flavors)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA_BYTES, space=FakeSpace, zones=True,
                         capacity_types=(ON_DEMAND, SPOT))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for test servers and the demo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], seconds: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {seconds:.0f}s")


def make_server_pki(directory: str) -> None:
    """``ca.pem``, and ``server.pem`` with ``server.key`` for 127.0.0.1 signed by it: a throwaway CA for
    an endpoint on loopback (the demo, benchmarks, tests)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcycle throwaway CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    server = (x509.CertificateBuilder().subject_name(server_name).issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
              .not_valid_after(now + timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    for name, data in (("ca.pem", ca.public_bytes(pem)), ("server.pem", server.public_bytes(pem)),
                       ("server.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))):
        with open(os.path.join(directory, name), "wb") as stream:
            stream.write(data)
    os.chmod(os.path.join(directory, "server.key"), 0o600)
