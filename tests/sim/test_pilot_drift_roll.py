"""A configuration change rolled over 150 busy pilot machines where no batch system shows them (DIRAC pilots,
pilot containers): the real planner, snapshots in and plans out, the machines played between cycles on
simulated time.

A machine is created STARTING, runs the next cycle and heartbeats every cycle from then on, each running one of
the 150 jobs while there is one. A drained machine is told so in its heartbeat's answer: it takes no new job,
finishes the one it runs two cycles later and stops (STOPPED), and the planner deletes it. After the image
changes, every cycle is checked: never more machines draining than the disruption budget, never fewer jobs
running than the 150 less that budget, no running machine deleted; in the end every old machine is replaced.
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
MT = {"demand": "q", "backoff_seconds": 60, "fizzle_seconds": 60, "max_wallclock_seconds": 7 * 86400,
      "heartbeat_file": "vm-heartbeat", "heartbeat_seconds": 600, "root_image": "image:cernvm-5.1",
      "user_data": "pilot-container"}
WORK = 150


class Pilots:
    """The cloud and the pilots in it: which machines run a job, which finish theirs after a drain."""

    def __init__(self, made_by: str, now: datetime) -> None:
        self.records: dict[str, MachineRecord] = {
            f"old-{i:03d}": rec(f"old-{i:03d}", S.RUNNING, started_at=now - timedelta(hours=1), made_by=made_by,
                                heartbeat_at=now) for i in range(WORK)}
        self.busy: set[str] = set(self.records)
        self.finishing: dict[str, int] = {}  # drained -> cycles until its job ends and it stops
        self.made = 0

    def cycle(self, config: object, now: datetime) -> Plan:
        snapshot = SpaceSnapshot("sp", tuple(self.records.values()))
        running = len(self.busy)
        return plan(snapshot, {"mt": Demand(idle_jobs=WORK - running, running_jobs=running)}, config, now)  # type: ignore[arg-type]

    def apply(self, result: Plan, made_by: str, now: datetime) -> None:
        for delete in result.deletes:
            assert self.records[delete.machine].state is S.STOPPED, delete
            self.records.pop(delete.machine)
        for drain in result.drains:
            self.records[drain.machine] = transition(self.records[drain.machine], S.DRAINING, now, drain.reason)
            self.finishing[drain.machine] = 2
        for _ in result.creates:
            self.made += 1
            name = f"new-{self.made:03d}"
            self.records[name] = rec(name, S.STARTING, created=now, made_by=made_by)

    def play(self, now: datetime) -> None:
        for name, left in list(self.finishing.items()):
            if left == 0:  # its job done: the pilot stops, as its heartbeat's answer asked
                self.busy.discard(name)
                self.finishing.pop(name)
                self.records[name] = transition(self.records[name], S.STOPPED, now, "stopped", stopped_at=now)
            else:
                self.finishing[name] = left - 1
        for name, r in list(self.records.items()):
            if r.state is S.STARTING and r.created_at < now:
                r = dataclasses.replace(transition(r, S.RUNNING, now, "running"), started_at=now)
            if r.state in (S.RUNNING, S.DRAINING):
                r = dataclasses.replace(r, heartbeat_at=now)
            self.records[name] = r
            if r.state is S.RUNNING and name not in self.busy and len(self.busy) < WORK:
                self.busy.add(name)  # a waiting job is matched to this pilot


def test_an_image_change_rolls_every_pilot_within_the_budget_and_keeps_the_work_running() -> None:
    old = make_config(limit=1000, machinetypes={"mt": MT}, extra=Q, settings={"max_create_fraction": 0.1})
    new = make_config(limit=1000, machinetypes={"mt": {**MT, "root_image": "image:cernvm-5.2"}}, extra=Q,
                      settings={"max_create_fraction": 0.1})
    current = new.spaces["sp"].machinetypes["mt"].made_by
    now = T0
    pilots = Pilots(old.spaces["sp"].machinetypes["mt"].made_by, now)
    for cycle in range(300):
        now += timedelta(minutes=1)
        result = pilots.cycle(new, now)
        assert not [d for d in result.decisions if d.action is Action.DELETE and d.rule != "stopped"]
        assert {d.rule for d in result.decisions if d.action is Action.DRAIN} <= {"drift"}
        pilots.apply(result, current, now)
        pilots.play(now)
        working = sum(1 for r in pilots.records.values() if r.state in (S.RUNNING, S.DRAINING))
        budget = math.ceil(0.1 * working)
        draining = sum(1 for r in pilots.records.values() if r.state is S.DRAINING)
        assert draining <= budget, f"cycle {cycle}: {draining} draining, budget {budget}"
        assert len(pilots.busy) >= WORK - budget, f"cycle {cycle}: {len(pilots.busy)} jobs run"
        if not any(n.startswith("old") for n in pilots.records):
            break
    assert not any(n.startswith("old") for n in pilots.records), "old machines left"
    assert cycle < 120, f"the roll took {cycle} cycles"
    assert pilots.made <= WORK + math.ceil(0.1 * WORK) * 2, pilots.made  # replacements, not a flood


def test_without_a_current_heartbeat_the_replacements_do_not_count_and_nothing_is_drained() -> None:
    """Replacements that run but never heartbeat (a broken template) are not ready: no old machine drains."""
    new = make_config(limit=1000, machinetypes={"mt": {**MT, "root_image": "image:cernvm-5.2"}}, extra=Q,
                      settings={"max_create_fraction": 0.1})
    old = make_config(limit=1000, machinetypes={"mt": MT}, extra=Q)
    now = T0 + timedelta(hours=2)
    machines = [rec(f"old-{i}", S.RUNNING, started_at=T0, heartbeat_at=now,
                    made_by=old.spaces["sp"].machinetypes["mt"].made_by) for i in range(10)]
    silent = [rec(f"new-{i}", S.RUNNING, started_at=now - timedelta(seconds=30),
                  made_by=new.spaces["sp"].machinetypes["mt"].made_by) for i in range(3)]
    result = plan(SpaceSnapshot("sp", tuple(machines + silent)), {"mt": Demand(idle_jobs=0, running_jobs=10)}, new,
                  now)
    assert not result.drains
    beating = [dataclasses.replace(r, heartbeat_at=now) for r in silent]
    result = plan(SpaceSnapshot("sp", tuple(machines + beating)), {"mt": Demand(idle_jobs=0, running_jobs=10)}, new,
                  now)
    assert len(result.drains) == 2  # three current ones ready; the budget (10 % of 13, rounded up) lets two go
    assert result.drains[0].reason.startswith("drifted (image changed): 3 current machines run, the work needs 10")
