"""A configuration change rolled over 200 busy machines by the real planner (pure: snapshots in, plans out, a
simple batch system and cloud played between cycles on simulated time).

Machines are created STARTING, run the next cycle, join the batch system the one after and take one of the 200
jobs (the others wait as idle jobs); a drained machine's startd finishes its job and leaves two cycles later, and
the planner then deletes it. After the machinetype's image changes, every cycle is checked: never more machines
retiring than the disruption budget, never fewer jobs running than the 200 less that budget; in the end every old
machine is replaced by a current one, and not many more were made.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta

from vctest import T0, make_config, rec

from vcycle.core.model import Action, Demand, MachineRecord, Plan, SpaceSnapshot, transition
from vcycle.core.planner import plan
from vcycle.core.states import MachineState

S = MachineState
Q = "[demand q]\ntype = file\npath = /dev/null\n"
MT = {"demand": "q", "retire_idle_seconds": 600, "register_timeout_seconds": 900, "backoff_seconds": 60,
      "fizzle_seconds": 60, "max_wallclock_seconds": 7 * 86400, "root_image": "image:cernvm-5.1",
      "user_data": "pilot-container"}
WORK = 200


class Site:
    """The cloud and the batch system: machines, and whether each one's startd runs a job."""

    def __init__(self, made_by: str, now: datetime) -> None:
        self.records: dict[str, MachineRecord] = {
            f"old-{i:03d}": rec(f"old-{i:03d}", S.RUNNING, started_at=now, made_by=made_by, registered_at=now)
            for i in range(WORK)}
        self.joined: dict[str, bool] = dict.fromkeys(self.records, True)
        self.leaving: dict[str, int] = {}  # drained machine -> cycles until its job ends and its startd leaves
        self.made = 0

    def cycle(self, config: object, now: datetime) -> Plan:
        busy = sum(self.joined.values())
        snapshot = SpaceSnapshot("sp", tuple(self.records.values()), registered=dict(self.joined))
        return plan(snapshot, {"mt": Demand(idle_jobs=WORK - busy, running_jobs=busy)}, config, now)  # type: ignore[arg-type]

    def apply(self, result: Plan, made_by: str, now: datetime) -> None:
        for delete in result.deletes:
            self.records.pop(delete.machine)
        for drain in result.drains:
            self.records[drain.machine] = transition(self.records[drain.machine], S.DRAINING, now, drain.reason)
            self.leaving[drain.machine] = 2
        for _ in result.creates:
            self.made += 1
            name = f"new-{self.made:03d}"
            self.records[name] = rec(name, S.STARTING, created=now, made_by=made_by)

    def play(self, now: datetime) -> None:
        for name, left in list(self.leaving.items()):
            if left == 0:
                self.joined.pop(name, None)  # its job done, its startd leaves
                self.leaving.pop(name)
            else:
                self.leaving[name] = left - 1
        for name, r in list(self.records.items()):
            if r.state is S.STARTING and r.created_at < now:
                self.records[name] = dataclasses.replace(transition(r, S.RUNNING, now, "running"), started_at=now)
            elif r.state is S.RUNNING and name not in self.joined:
                self.joined[name] = False
                self.records[name] = dataclasses.replace(r, registered_at=now, idle_since=now)
        for name in [n for n, has in self.joined.items() if not has and self.records[n].state is S.RUNNING]:
            if sum(self.joined.values()) < WORK:  # a waiting job starts on an idle machine
                self.joined[name] = True
                self.records[name] = dataclasses.replace(self.records[name], idle_since=None)


def test_an_image_change_rolls_every_machine_within_the_budget_and_keeps_the_work_running() -> None:
    old = make_config(limit=1000, machinetypes={"mt": MT}, extra=Q, settings={"max_create_fraction": 0.1})
    new = make_config(limit=1000, machinetypes={"mt": {**MT, "root_image": "image:cernvm-5.2"}}, extra=Q,
                      settings={"max_create_fraction": 0.1})
    current = new.spaces["sp"].machinetypes["mt"].made_by
    now = T0
    site = Site(old.spaces["sp"].machinetypes["mt"].made_by, now)
    for cycle in range(300):
        now += timedelta(minutes=1)
        result = site.cycle(new, now)
        assert not [d for d in result.decisions if d.action is Action.DELETE and d.rule != "drain_done"]
        site.apply(result, current, now)
        site.play(now)
        budget = math.ceil(0.1 * sum(1 for r in site.records.values() if r.state in (S.RUNNING, S.DRAINING)))
        retiring = sum(1 for r in site.records.values() if r.state is S.DRAINING)
        assert retiring <= budget, f"cycle {cycle}: {retiring} retiring, budget {budget}"
        assert sum(site.joined.values()) >= WORK - budget, f"cycle {cycle}: {sum(site.joined.values())} jobs run"
        if not any(n.startswith("old") for n in site.records):
            break
    assert not any(n.startswith("old") for n in site.records), "old machines left"
    assert cycle < 100, f"the roll took {cycle} cycles"
    assert site.made <= WORK + math.ceil(0.1 * WORK) * 2, site.made  # replacements, not a flood
