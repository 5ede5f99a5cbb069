"""A first look at vcycle: its daemon's cycles on a simulated cloud, one simulated minute each.

One space with a limit of 16 processors and two machinetypes: ``alpha``
(target_share 3) whose pilots work for a while and finish with
'200 Success', and ``beta`` (target_share 1) whose pilots find no work and
stop at once with '300 No matching jobs', so its backoff shows. Each cycle
is vcycle's real code path (the store in SQLite, intent recorded before
every create, user-data rendered from the shipped ``pilot-container``
template, decisions with their reasons); only the cloud (the FakeConnector)
and the clock are simulated, and a small script plays the pilots. At the end
the status table and one machine's history are printed, as ``vcycle status``
and ``vcycle machines history`` show them.

    make demo        (or: .venv/bin/python scripts/demo.py --cycles 25)
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from datetime import UTC, datetime

from rich.console import Console

from vcycle import status
from vcycle.config import load_config
from vcycle.daemon import Manager
from vcycle.model import CloudStatus, CycleReport, Heartbeat
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

SPACE = "demo.example.org"
CONFIG = """
[settings]
state_url = sqlite:///{directory}/state.db
state_dir = {directory}
manager_name = demo-manager
max_create_fraction = 0.25

[space {space}]
api = fake
processors_limit = 16
https_host = vcycle.example.org

[machinetype {space} alpha]
user_data = pilot-container
user_data_option_pilot_command = run-some-jobs
target_share = 3
backoff_seconds = 300
fizzle_seconds = 120
max_wallclock_seconds = 1200

[machinetype {space} beta]
user_data = pilot-container
target_share = 1
backoff_seconds = 300
fizzle_seconds = 120
"""


def play_pilots(cloud: FakeConnector, store: Store, now: datetime, started: dict[str, datetime]) -> None:
    """The pilots between two cycles: alpha works about eight minutes, beta gives up at once."""
    beats = []
    for machine in cloud.ours():
        if machine.status is not CloudStatus.RUNNING or machine.owner is None:
            continue
        since = started.setdefault(machine.name, now)
        minutes = (now - since).total_seconds() / 60
        message = None
        if machine.owner.machinetype == "beta" and minutes >= 1:
            message = "300 No matching jobs"
        elif machine.owner.machinetype == "alpha" and minutes >= 8 + len(machine.name) % 3:
            message = "200 Success"
        beats.append((SPACE, Heartbeat(machine.name, now, message, now if message else None)))
        if message:
            cloud.set_status(machine.name, CloudStatus.STOPPED, "SHUTOFF")
    store.put_heartbeats(beats)


def show_cycle(number: int, now: datetime, store: Store, report: CycleReport) -> None:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for record in store.load(SPACE).records:
        if record.state.value != "gone":
            counts[record.machinetype][record.state.value] += 1
    states = "  ".join(f"{mt}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                       for mt, c in sorted(counts.items()))
    print(f"\ncycle {number:2d}  {now:%H:%M}  {states or 'no machines'}")
    made = collections.Counter(d.machinetype for d in report.decisions if d.action.value == "create")
    for machinetype, n in sorted(made.items()):
        print(f"   + create {n} {machinetype}")
    for decision in report.decisions:
        if decision.action.value == "delete":
            print(f"   - delete {decision.machine}: {decision.reason}")
        elif decision.action.value == "hold":
            print(f"   = hold {decision.machinetype or 'space'}: {decision.reason}")
    for error in report.errors:
        print(f"   ! {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description="vcycle's cycles on a simulated cloud")
    parser.add_argument("--cycles", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcycle-demo-") as directory:
        path = os.path.join(directory, "vcycle.conf")
        with open(path, "w") as stream:
            stream.write(CONFIG.format(directory=directory, space=SPACE))
        config = load_config([path])
        clock = FakeClock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
        cloud = FakeConnector(clock=clock, boot_seconds=30)
        store = Store.open(config.settings.state_url)
        manager = Manager(config, store, clock=clock, connector_factory=lambda space, cfg: cloud)
        print(f"vcycle demo: space {SPACE}, processors_limit 16, alpha (share 3, works) and beta (share 1, aborts)")
        started: dict[str, datetime] = {}
        totals: collections.Counter[str] = collections.Counter()
        try:
            for number in range(1, args.cycles + 1):
                (report,) = manager.cycle()
                show_cycle(number, clock(), store, report)
                totals.update(d.action.value for d in report.decisions)
                clock.advance(60)
                play_pilots(cloud, store, clock(), started)
            print()
            status.show(status.collect(config, store, clock()), Console())
            finished = [r for r in store.records(SPACE) if r.shutdown_code == 200]
            if finished:
                example = finished[0]
                print(f"\nhistory of {example.name} ({example.machinetype}), as `vcycle machines history` shows it:")
                for change in store.history(SPACE, example.name):
                    print(f"  {change.at:%H:%M:%S}  {change.state.value:<13}  {change.reason}")
            print(f"\nsummary: {totals['create']} creates, {totals['delete']} deletes, {totals['hold']} refusals")
            print("next: `vcycle check-config --config etc/vcycle.conf.example` shows a real configuration;"
                  " `vcycle render` shows a machine's user-data")
        finally:
            manager.close()
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
