"""A first look at vcycle: the core deciding, cycle by cycle, on a simulated cloud.

One space with a limit of 16 processors and two machinetypes: ``alpha``
(target_share 3) whose pilots work for a while and finish with
'200 Success', and ``beta`` (target_share 1) whose pilots find no work and
stop at once with '300 No matching jobs', so its backoff shows. Each cycle
is one simulated minute: the cloud is observed, sync folds it into the
records, the planner decides, and the simulated cloud does what it is told.
Every decision is printed with its reason.

    make demo        (or: .venv/bin/python scripts/demo.py --cycles 30)
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vcycle.config import Config, load_config
from vcycle.model import (
    Action,
    CloudMachine,
    CloudStatus,
    Heartbeat,
    MachineRecord,
    OwnerTags,
    Plan,
    SpaceSnapshot,
    new_record,
)
from vcycle.planner import plan
from vcycle.states import MachineState
from vcycle.sync import sync

SPACE = "demo.example.org"
CONFIG = f"""
[settings]
manager_name = demo-manager
max_create_fraction = 0.25

[space {SPACE}]
api = fake
processors_limit = 16

[machinetype {SPACE} alpha]
user_data = pilot-container
target_share = 3
backoff_seconds = 300
fizzle_seconds = 120
max_wallclock_seconds = 1200

[machinetype {SPACE} beta]
user_data = pilot-container
target_share = 1
backoff_seconds = 300
fizzle_seconds = 120
"""
STEP = timedelta(minutes=1)


@dataclass
class SimMachine:
    """A machine of the simulated cloud, with its scripted life."""

    name: str
    machinetype: str
    born: datetime
    status: CloudStatus = CloudStatus.STARTING
    message: str | None = None


class SimCloud:
    """Boots machines after a minute; alpha works ~8 minutes, beta aborts at once."""

    def __init__(self) -> None:
        self.machines: dict[str, SimMachine] = {}
        self.counter = 0

    def list(self) -> list[CloudMachine]:
        return [CloudMachine(m.name, m.name, m.status, OwnerTags(SPACE, m.machinetype, "demo-manager", m.name), 1,
                             m.born) for m in self.machines.values()]

    def advance(self, now: datetime) -> dict[str, Heartbeat]:
        beats = {}
        for m in self.machines.values():
            age = now - m.born
            if m.status is CloudStatus.STARTING and age >= STEP:
                m.status = CloudStatus.RUNNING
            elif m.status is CloudStatus.RUNNING:
                done = m.machinetype == "beta" or age >= 8 * STEP + timedelta(minutes=len(m.name) % 3)
                if done:
                    m.status = CloudStatus.STOPPED
                    m.message = "300 No matching jobs" if m.machinetype == "beta" else "200 Success"
            beats[m.name] = Heartbeat(m.name, now, m.message, now if m.message else None)
        return beats

    def apply(self, result: Plan, now: datetime, records: dict[str, MachineRecord]) -> None:
        for order in result.creates:
            self.counter += 1
            name = f"vcycle-{order.machinetype}-{self.counter:03d}"
            self.machines[name] = SimMachine(name, order.machinetype, now)
            records[name] = new_record(name=name, space=SPACE, machinetype=order.machinetype,
                                       state=MachineState.REQUESTED, processors=order.processors, now=now,
                                       request_id=name, reason="intent: " + order.reason,
                                       manager="demo-manager", shutdown_at=order.shutdown_at)
        for delete in result.deletes:
            self.machines.pop(delete.machine, None)


def show(cycle: int, now: datetime, records: dict[str, MachineRecord], result: Plan) -> None:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in records.values():
        if r.state is not MachineState.GONE:
            counts[r.machinetype][r.state.value] += 1
    states = "  ".join(f"{mt}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                       for mt, c in sorted(counts.items()))
    print(f"\ncycle {cycle:2d}  {now:%H:%M}  {states or 'no machines'}")
    made = collections.Counter(c.machinetype for c in result.creates)
    for mt, n in sorted(made.items()):
        print(f"   + create {n} {mt}")
    for d in result.decisions:
        if d.action is Action.DELETE:
            print(f"   - delete {d.machine}: {d.reason}")
        elif d.action is Action.HOLD:
            print(f"   = hold {d.machinetype or 'space'}: {d.reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description="vcycle's core on a simulated cloud")
    parser.add_argument("--cycles", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "demo.conf")
        with open(path, "w") as stream:
            stream.write(CONFIG)
        config: Config = load_config([path])
    print(f"vcycle demo: space {SPACE}, processors_limit 16, alpha (share 3, works) and beta (share 1, aborts)")
    cloud, records, backoffs = SimCloud(), {}, {}
    now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    totals: collections.Counter[str] = collections.Counter()
    for cycle in range(1, args.cycles + 1):
        beats = cloud.advance(now)
        synced = sync(records.values(), cloud.list(), beats, now, space=config.spaces[SPACE],
                      settings=config.settings, backoffs=backoffs)
        records = {r.name: r for r in synced.records}
        backoffs = dict(synced.backoffs)
        result = plan(SpaceSnapshot(SPACE, synced.records, backoffs=backoffs), {}, config, now)
        show(cycle, now, records, result)
        totals.update(d.action.value for d in result.decisions)
        cloud.apply(result, now, records)
        now += STEP
    finished = collections.Counter((r.machinetype, r.shutdown_code) for r in records.values() if r.shutdown_code)
    print("\nsummary:", f"{totals['create']} creates, {totals['delete']} deletes, {totals['hold']} refusals;",
          ", ".join(f"{n} {mt} stopped with {code}" for (mt, code), n in sorted(finished.items())))
    print("next: `vcycle check-config --config etc/vcycle.conf.example` shows a real configuration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
