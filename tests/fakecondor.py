"""A fake HTCondor pool for the tests, answering the htcondor2 calls vcycle makes (no HTCondor daemon can run
on this machine: the htcondor wheel ships the bindings only, Debian 12 has no HTCondor package).

Its ads are real ``classad2.ClassAd`` objects, loaded from fixtures in the exact shape ``condor_q -json`` and
``condor_status -json`` print, and constraints are evaluated by classad2 itself, so a constraint HTCondor
would refuse or match differently does so here too. ``FakeHTCondor`` stands in for the ``htcondor2`` module
(Collector, Schedd, DaemonType, HTCondorException are the real enum and exception). ``write_tools`` makes
``condor_q`` and ``condor_status`` programs that answer from the same pool.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import classad2
import htcondor2

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "htcondor"


def load_ads(path: Path) -> list[classad2.ClassAd]:
    """Ads of a ``-json`` output file, parsed by classad2 one by one (its JSON parser reads one ad)."""
    return [classad2.parseOne(json.dumps(ad).replace("/", "\\/"), classad2.ParserType.JSON)
            for ad in json.loads(path.read_text())]


def matches(ad: classad2.ClassAd, constraint: str | None) -> bool:
    if constraint is None or constraint.strip() in ("", "true", "True"):
        return True
    try:
        return classad2.ExprTree(constraint).eval(ad) is True
    except Exception as exc:
        raise htcondor2.HTCondorException(f"bad constraint {constraint!r}: {exc}") from exc


def projected(ad: classad2.ClassAd, projection: list[str] | None) -> classad2.ClassAd:
    if not projection:
        return ad
    out = classad2.ClassAd()
    for key in projection:
        if key in ad:
            out[key] = ad.lookup(key)
    return out


class FakePool:
    """Schedds with their job ads, and startd ads, as one collector sees them."""

    def __init__(self, schedds: dict[str, list[classad2.ClassAd]] | None = None,
                 startds: list[classad2.ClassAd] | None = None) -> None:
        self.schedds = schedds if schedds is not None else {}
        self.startds = startds if startds is not None else []
        self.reachable = True
        self.down_schedds: set[str] = set()
        self.calls: list[tuple[str, ...]] = []
        self.commands: list[tuple[str, str]] = []  # (master's name, command) sent with send_command
        self.drain_leaves = False  # a drained startd leaves the pool at once (it had no jobs)

    @classmethod
    def from_fixtures(cls) -> FakePool:
        return cls({"schedd1.example.org": load_ads(FIXTURES / "condor_q.schedd1.json"),
                    "schedd2.example.org": load_ads(FIXTURES / "condor_q.schedd2.json")})

    def schedd_ad(self, name: str) -> classad2.ClassAd:
        for ad in load_ads(FIXTURES / "condor_status.schedd.json"):
            if ad["Name"] == name:
                return ad
        ad = classad2.ClassAd()
        ad["MyType"], ad["Name"], ad["MyAddress"] = "Scheduler", name, f"<192.0.2.99:9618?alias={name}>"
        return ad


class FakeCollector:
    def __init__(self, pool: FakePool, where: Any = None) -> None:
        self.pool, self.where = pool, where

    def _check(self) -> None:
        if not self.pool.reachable:
            raise htcondor2.HTCondorException("Failed communication with collector.")

    def locate(self, daemon_type: htcondor2.DaemonType, name: str | None = None) -> classad2.ClassAd:
        self.pool.calls.append(("locate", daemon_type.name, name or ""))
        self._check()
        if daemon_type is htcondor2.DaemonType.Schedd and name in self.pool.schedds:
            return self.pool.schedd_ad(name)
        if daemon_type is htcondor2.DaemonType.Master and any(s.get("Machine") == name for s in self.pool.startds):
            master = classad2.ClassAd()
            master["MyType"], master["Name"], master["Machine"] = "DaemonMaster", name, name
            return master
        raise htcondor2.HTCondorException(f"Unable to find daemon {name}")

    def locateAll(self, daemon_type: htcondor2.DaemonType) -> list[classad2.ClassAd]:
        self.pool.calls.append(("locateAll", daemon_type.name))
        self._check()
        assert daemon_type is htcondor2.DaemonType.Schedd
        return [self.pool.schedd_ad(name) for name in self.pool.schedds]

    def query(self, ad_type: htcondor2.AdType = htcondor2.AdType.Any, constraint: str | None = None,
              projection: list[str] | None = None, statistics: str | None = None) -> list[classad2.ClassAd]:
        self.pool.calls.append(("query", ad_type.name, constraint or ""))
        self._check()
        assert ad_type in (htcondor2.AdType.Startd, htcondor2.AdType.Slot)
        return [projected(ad, projection) for ad in self.pool.startds if matches(ad, constraint)]


class FakeSchedd:
    def __init__(self, pool: FakePool, location: classad2.ClassAd | None = None) -> None:
        self.pool = pool
        self.name = location["Name"] if location is not None else next(iter(pool.schedds))

    def query(self, constraint: str = "True", projection: list[str] | None = None, callback: Any = None,
              limit: int = -1, opts: Any = None) -> list[classad2.ClassAd]:
        self.pool.calls.append(("schedd.query", self.name, constraint))
        if self.name in self.pool.down_schedds:
            raise htcondor2.HTCondorException(f"Failed to fetch ads from schedd {self.name}")
        return [projected(ad, projection) for ad in self.pool.schedds[self.name] if matches(ad, constraint)]


class FakeHTCondor:
    """The part of the ``htcondor2`` module vcycle uses, over a FakePool."""

    DaemonType = htcondor2.DaemonType
    AdType = htcondor2.AdType
    DaemonCommand = htcondor2.DaemonCommand
    HTCondorException = htcondor2.HTCondorException

    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    def Collector(self, pool: Any = None) -> FakeCollector:
        return FakeCollector(self.pool, pool)

    def Schedd(self, location: classad2.ClassAd | None = None) -> FakeSchedd:
        return FakeSchedd(self.pool, location)

    def send_command(self, ad: classad2.ClassAd, dc: htcondor2.DaemonCommand, target: str | None = None) -> None:
        self.pool.commands.append((ad["Name"], dc.name))
        if self.pool.drain_leaves and dc is htcondor2.DaemonCommand.DaemonsOffPeaceful:
            self.pool.startds[:] = [s for s in self.pool.startds if s.get("Machine") != ad["Name"]]


def startd(machine: str, space: str, state: str = "Unclaimed", slot: str = "slot1", kind: str = "Partitionable",
           host: str | None = None) -> classad2.ClassAd:
    """A slot ad of a vcycle machine's startd, as ``condor_status -startd`` shows it."""
    ad = classad2.ClassAd()
    where = host or f"{machine}.example.org"
    for key, value in (("MyType", "Machine"), ("Name", f"{slot}@{where}"), ("Machine", where),
                       ("VCYCLE_MACHINE", machine), ("VCYCLE_SPACE", space), ("State", state),
                       ("SlotType", kind), ("Cpus", 8)):
        ad[key] = value
    return ad


TOOL = '''#!{python}
"""A fake {name}: answers from the fixtures like HTCondor's own tool with -json (see tests/fakecondor.py)."""
import json, sys
sys.path.insert(0, {tests!r})
import classad2
from fakecondor import FakePool, matches

args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(["{name}", *args]) + "\\n")
if {down!r}:
    print("Error: communication error\\nCEDAR:6001:Failed to connect to <192.0.2.1:9618>", file=sys.stderr)
    sys.exit(1)
pool = FakePool.from_fixtures()
def value(flag):
    return args[args.index(flag) + 1] if flag in args else None
if "{name}" == "condor_off":
    sys.exit(0)  # the command is logged above: that is all a test needs of it
if "{name}" == "condor_status" and "-startd" in args:
    from fakecondor import FIXTURES, load_ads
    ads = [ad for ad in load_ads(FIXTURES / "condor_status.startd.json") if matches(ad, value("-constraint"))]
elif "{name}" == "condor_status":
    ads = [pool.schedd_ad(name) for name in pool.schedds]
else:
    ads = [ad for ad in pool.schedds[value("-name")] if matches(ad, value("-constraint"))]
keys = value("-attributes").split(",") if value("-attributes") else None
out = []
for ad in ads:
    whole = json.loads(ad.printJson())
    out.append({{k: v for k, v in whole.items() if keys is None or k in keys}})
if out:  # like the real tools, nothing at all when nothing matches
    text = "[\\n" + "\\n,\\n".join(json.dumps(ad, indent=2) for ad in out) + "\\n]"
    print(text.replace("/", "\\\\/"))  # the ClassAd JSON writer escapes every slash
'''


def write_tools(directory: Path, down: bool = False) -> Path:
    """``condor_q``, ``condor_status`` and ``condor_off`` in ``directory`` (put it first on PATH); their calls go to
    ``directory/calls.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("condor_q", "condor_status", "condor_off"):
        path = directory / name
        path.write_text(TOOL.format(python=sys.executable, name=name, tests=str(Path(__file__).parent),
                                    log=str(directory / "calls.jsonl"), down=down))
        path.chmod(0o755)
    return directory / "calls.jsonl"
