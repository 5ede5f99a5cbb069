"""Simulated clouds: one per configured space, as a small INI file declares them.

::

    [defaults]                        # every space, unless its own section says otherwise
    boot_seconds = uniform 60 180     # fixed seconds, "uniform LOW HIGH" or "normal MEAN SD"
    failure_rate = 0.02               # share of machines that fail while booting
    interruption_rate_per_hour = 0    # for a running machine, each hour
    api_latency_seconds = 1           # added to every machine's boot
    prices = m5.large=0.096 */spot=0.03   # a machine-hour's cost, as offering_prices
    failure_rates = m5.large@za/spot=0.5  # per offering, above failure_rate
    interruption_rates = */spot=0.05      # per offering, above interruption_rate_per_hour

    [space NAME]
    quota_processors = 400
    flavors = m5.large=2 m5.xlarge=4   # what flavors() answers; default: it cannot tell

Chance comes from one seeded generator per space, so a seed gives the same
run every time.
"""

from __future__ import annotations

import configparser
import dataclasses
import heapq
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vcycle.clock import Clock
from vcycle.core.model import CloudMachine, CloudStatus, LaunchSpec, Offering, most_specific
from vcycle.core.sections import offering_prices
from vcycle.errors import ConfigError, ConfigProblem, LaunchRejected, QuotaExceeded

KEYS = ("boot_seconds", "failure_rate", "interruption_rate_per_hour", "api_latency_seconds", "prices",
        "failure_rates", "interruption_rates", "quota_processors", "flavors")


_STATUS = {"booting": CloudStatus.STARTING, "running": CloudStatus.RUNNING, "failed": CloudStatus.FAILED,
           "stopped": CloudStatus.STOPPED}


@dataclass(frozen=True, slots=True)
class CloudSpec:
    """How one simulated cloud behaves."""

    boot: tuple[str, float, float] = ("fixed", 60.0, 0.0)
    failure_rate: float = 0.0
    interruption_rate_per_hour: float = 0.0
    api_latency_seconds: float = 0.0
    prices: tuple[tuple[Offering, float], ...] = ()
    failure_rates: tuple[tuple[Offering, float], ...] = ()
    interruption_rates: tuple[tuple[Offering, float], ...] = ()
    quota_processors: int | None = None
    flavors: Mapping[str, int] = field(default_factory=dict)


def _boot(value: str) -> tuple[str, float, float]:
    words = value.split()
    try:
        numbers = [float(w) for w in words[1:]] if words and words[0] in ("uniform", "normal") else \
            [float(w) for w in words]
    except ValueError:
        raise ValueError(f"{value!r} is not seconds, 'uniform LOW HIGH' or 'normal MEAN SD'") from None
    if words and words[0] in ("uniform", "normal") and len(numbers) == 2 and min(numbers) >= 0:
        return words[0], numbers[0], numbers[1]
    if len(words) == 1 and numbers[0] >= 0:
        return "fixed", numbers[0], 0.0
    raise ValueError(f"{value!r} is not seconds, 'uniform LOW HIGH' or 'normal MEAN SD' (0 or more)")


def _rate(value: str) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{rate:g} is not a share between 0 and 1")
    return rate


def _flavors(value: str) -> dict[str, int]:
    found = {}
    for word in value.split():
        name, _, vcpus = word.partition("=")
        if not name or not vcpus.isdigit() or int(vcpus) < 1:
            raise ValueError(f"{word!r} is not FLAVOR=VCPUS")
        found[name] = int(vcpus)
    return found


def _quota(value: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"{value!r} is not a whole number of processors")
    return int(value)


PARSERS: dict[str, Any] = {
    "boot_seconds": ("boot", _boot), "failure_rate": ("failure_rate", _rate),
    "interruption_rate_per_hour": ("interruption_rate_per_hour", _rate),
    "api_latency_seconds": ("api_latency_seconds", lambda v: max(0.0, float(v))),
    "prices": ("prices", offering_prices), "failure_rates": ("failure_rates", offering_prices),
    "interruption_rates": ("interruption_rates", offering_prices), "quota_processors": ("quota_processors", _quota),
    "flavors": ("flavors", _flavors),
}


def load(path: str | None, spaces: list[str]) -> dict[str, CloudSpec]:
    """Each configured space's cloud, from the file at ``path`` (None: every cloud the defaults). Raises
    ConfigError naming file, section and key."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    if path is not None:
        try:
            with open(path) as stream:
                parser.read_file(stream)
        except OSError as exc:
            raise ConfigError([ConfigProblem(path, "", "", f"cannot read: {exc.strerror}")]) from None
        except configparser.Error as exc:
            raise ConfigError([ConfigProblem(path, "", "", f"not an INI file: {exc}")]) from None
    problems: list[ConfigProblem] = []
    where = path or "(defaults)"
    for section in parser.sections():
        if section != "defaults" and not (section.startswith("space ") and section[6:] in spaces):
            problems.append(ConfigProblem(where, section, "", "not [defaults] or [space NAME] of a configured "
                                                             f"space ({', '.join(spaces)})"))
    defaults = _spec(parser, "defaults", CloudSpec(), where, problems)
    found = {name: _spec(parser, f"space {name}", defaults, where, problems) for name in spaces}
    if problems:
        raise ConfigError(problems)
    return found


def _spec(parser: configparser.ConfigParser, section: str, base: CloudSpec, where: str,
          problems: list[ConfigProblem]) -> CloudSpec:
    if not parser.has_section(section):
        return base
    values: dict[str, Any] = {}
    for key, value in parser.items(section, raw=True):
        if key not in PARSERS:
            problems.append(ConfigProblem(where, section, key, f"unknown key (known: {', '.join(KEYS)})"))
            continue
        name, parse = PARSERS[key]
        try:
            values[name] = parse(value)
        except ValueError as exc:
            problems.append(ConfigProblem(where, section, key, str(exc)))
    return dataclasses.replace(base, **values)


@dataclass(slots=True)
class _Machine:
    view: CloudMachine
    offering: Offering
    running_at: datetime
    fails: bool
    price: float
    state: str = "booting"  # booting, running, failed, stopped
    stopped_at: datetime | None = None


class SimulatedCloud:
    """A connector whose machines boot, fail and are interrupted as its CloudSpec says, on a shared clock."""

    api = "simulated"
    max_user_data_bytes = 16 * 1024 * 1024

    def __init__(self, space: str, spec: CloudSpec, clock: Clock, seed: int) -> None:
        self.space = space
        self.spec = spec
        self.clock = clock
        self.rng = random.Random(zlib.crc32(f"{seed}:{space}".encode()))
        self.machines: dict[str, _Machine] = {}
        self.counter = 0
        self.interrupted = 0
        self.failed = 0
        self.spent = 0.0  # what the machines gone cost, each from its creation until it was gone
        self.core_seconds = 0.0  # processors x seconds the machines gone ran
        self._booting: list[tuple[datetime, int, str]] = []  # (running at, creation, name) while booting: a heap

    # --- the connector protocol ------------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        self._advance(self.clock())
        return [m.view for m in self.machines.values()]

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        now = self.clock()
        if spec.name in self.machines:
            existing = self.machines[spec.name]
            if existing.view.owner is not None and existing.view.owner.request_id == spec.request_id:
                return existing.view
            raise LaunchRejected(f"a machine named {spec.name} exists for another request")
        quota = self.spec.quota_processors
        if quota is not None and self.processors() + spec.processors > quota:
            raise QuotaExceeded(f"quota exceeded for cores: requested {spec.processors}, used {self.processors()} "
                                f"of {quota}")
        self.counter += 1
        offering = spec.offering
        fails = self.rng.random() < max(self.spec.failure_rate, most_specific(self.spec.failure_rates, offering) or 0.0)
        boot = self._boot() + self.spec.api_latency_seconds
        view = CloudMachine(f"sim-{self.counter:07d}", spec.name, CloudStatus.STARTING, spec.owner, spec.processors,
                            now, "BOOTING", zone=spec.zone, flavor=spec.flavor)
        running_at = now + timedelta(seconds=boot)
        self.machines[spec.name] = _Machine(view, offering, running_at, fails,
                                            most_specific(self.spec.prices, offering) or 0.0)
        heapq.heappush(self._booting, (running_at, self.counter, spec.name))
        return view

    def delete_machine(self, machine_id: str) -> None:
        for name, machine in list(self.machines.items()):
            if machine.view.id == machine_id:
                self._gone(name, self.clock())

    def capacity(self) -> int | None:
        return self.spec.quota_processors

    def flavors(self) -> Mapping[str, int] | None:
        return dict(self.spec.flavors) if self.spec.flavors else None

    # --- what the simulation asks -----------------------------------------------------------

    def processors(self) -> int:
        return sum(m.view.processors or 0 for m in self.machines.values())

    def running(self, now: datetime) -> list[CloudMachine]:
        """The machines running at ``now``, oldest first."""
        self._advance(now)
        return [m.view for m in self.machines.values() if m.state == "running"]

    def stop(self, name: str) -> None:
        """The machine's pilot ended: it powers off and is listed stopped."""
        machine = self.machines.get(name)
        if machine is not None:
            machine.state, machine.stopped_at = "stopped", self.clock()
            self._show(machine)

    def figures(self, now: datetime) -> tuple[float, float]:
        """(what every machine cost until ``now``, processors x seconds they ran), the gone and the alive."""
        spent, ran = self.spent, self.core_seconds
        for machine in self.machines.values():
            cost, seconds = self._figures(machine, now)
            spent, ran = spent + cost, ran + seconds
        return spent, ran

    def _figures(self, machine: _Machine, now: datetime) -> tuple[float, float]:
        created = machine.view.created_at or now
        cost = machine.price * max(0.0, (now - created).total_seconds()) / 3600.0
        if machine.fails or now <= machine.running_at:
            return cost, 0.0
        end = min(now, machine.stopped_at) if machine.stopped_at is not None else now
        return cost, (machine.view.processors or 0) * max(0.0, (end - machine.running_at).total_seconds())

    def _gone(self, name: str, now: datetime) -> None:
        machine = self.machines.pop(name)
        cost, seconds = self._figures(machine, now)
        self.spent += cost
        self.core_seconds += seconds

    def interrupt(self, now: datetime, seconds: float) -> list[str]:
        """Take back, at random as the rates say, running machines over the last ``seconds``: their names."""
        gone: list[str] = []
        if self.spec.interruption_rate_per_hour <= 0 and all(r <= 0 for _, r in self.spec.interruption_rates):
            return gone  # no offering is ever interrupted: no machine to look at, no random number drawn
        for name, machine in list(self.machines.items()):
            rate = max(self.spec.interruption_rate_per_hour, most_specific(self.spec.interruption_rates,
                                                                    machine.offering) or 0.0)
            if rate > 0 and self._state(machine, now) == "running" and \
                    self.rng.random() < 1 - (1 - rate) ** (seconds / 3600.0):
                self._gone(name, now)
                gone.append(name)
        self.interrupted += len(gone)
        return gone

    def _boot(self) -> float:
        kind, a, b = self.spec.boot
        if kind == "uniform":
            return self.rng.uniform(min(a, b), max(a, b))
        if kind == "normal":
            return max(0.0, self.rng.gauss(a, b))
        return a

    def _advance(self, now: datetime) -> None:
        """The machines whose boot ended by ``now`` run, or failed (each looked at once, not every machine at
        every listing)."""
        booting = self._booting
        while booting and booting[0][0] <= now:
            machine = self.machines.get(heapq.heappop(booting)[2])
            if machine is not None:
                self._state(machine, now)

    def _state(self, machine: _Machine, now: datetime) -> str:
        if machine.state == "booting" and now >= machine.running_at:
            machine.state = "failed" if machine.fails else "running"
            self.failed += machine.fails
            self._show(machine)
        return machine.state

    @staticmethod
    def _show(machine: _Machine) -> None:
        """The machine's view (what a listing gives) as its state is now."""
        status = _STATUS[machine.state]
        if machine.view.status is not status:
            v = machine.view
            machine.view = CloudMachine(v.id, v.name, status, v.owner, v.processors, v.created_at,
                                        machine.state.upper(), zone=v.zone, flavor=v.flavor)
