"""Machines and their batch daemons: register timeouts, drains and retirement.

Where a space's machines run a batch daemon (an HTCondor startd that
advertises its vcycle machine name, a slurmd that joins as a node named after
it), the batch system says which machines are registered in it and which
have work. From that, per machinetype:

- a running machine whose daemon never registered within
  ``register_timeout_seconds`` is deleted with '500 Batch daemon did not
  register' (an abort: the machinetype backs off), and one registered but
  idle ever since, while idle jobs wait, after ``first_job_timeout_seconds``
  with '700 Ran no job' (an abort too: the jobs cannot run on it);
- a running machine whose daemon has had no work for
  ``retire_idle_seconds``, while the machinetype has more idle machines than
  its idle jobs fill, is asked to drain (longest idle first), and so is
  every registered machine of a machinetype an operator drained;
- a draining machine is deleted once its daemon has finished and left (a startd
  gone from the pool, a Slurm node drained), or after
  ``retire_timeout_seconds``.

Pure: no clock, no I/O; ``now`` and the observations are given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from operator import attrgetter

from vcycle.core import drift, rules, timeouts
from vcycle.core.model import Action, Decision, DeleteOrder, Demand, DrainOrder, MachineRecord
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.core.states import WORKING_STATES, MachineState

S = MachineState
MACHINETYPE, MADE_BY = attrgetter("machinetype"), attrgetter("made_by")
REGISTER_TIMEOUT, NO_JOB, DRAINED = rules.NOT_REGISTERED, rules.NO_JOB, rules.DRAINED
ABORTS = {"register_timeout": timeouts.REGISTER.abort, "first_job_timeout": timeouts.FIRST_JOB.abort}


def batch_orders(records: Sequence[MachineRecord], registered: Mapping[str, bool], space: SpaceConfig,
                 settings: Settings, demand: Mapping[str, Demand], needed: Callable[[str], int | None],
                 draining: Collection[str], skip: Collection[str], now: datetime, *,
                 creating: Collection[str] = (), recent_idle: Mapping[str, Sequence[int]] | None = None,
                 ) -> tuple[list[DrainOrder], list[DeleteOrder], list[Decision]]:
    """Drains, deletes and their decisions for the machines not already in ``skip`` (being deleted).

    ``needed(machinetype)`` is how many machines the machinetype's idle jobs fill (None: unknown);
    ``creating`` the machinetypes this cycle creates for; ``recent_idle`` their idle jobs in the last cycles.
    """
    drains: list[DrainOrder] = []
    deletes: list[DeleteOrder] = []
    decisions: list[Decision] = []
    idle: dict[str, list[MachineRecord]] = {}

    def delete(record: MachineRecord, code: tuple[int, str], reason: str, rule: str) -> None:
        deletes.append(DeleteOrder(space.name, record.machinetype, record.name, record.cloud_id, *code, reason,
                                   ABORTS.get(rule, False)))
        decisions.append(Decision(Action.DELETE, space.name, record.machinetype, reason, record.name, rule))

    def hold(machinetype: str, reason: str, rule: str) -> None:
        decisions.append(Decision(Action.HOLD, space.name, machinetype, reason, rule=rule))

    def drain(record: MachineRecord, reason: str, rule: str) -> None:
        drains.append(DrainOrder(space.name, record.machinetype, record.name, reason))
        decisions.append(Decision(Action.DRAIN, space.name, record.machinetype, reason, record.name, rule))

    for record in records:
        mt = space.machinetypes.get(record.machinetype)
        if mt is None or record.name in skip or record.state not in WORKING_STATES:
            continue
        wanted = demand.get(record.machinetype)
        verdict = _verdict(record, registered, mt, settings, record.machinetype in draining or "*" in draining,
                           wanted is not None and wanted.known and wanted.idle_jobs > 0, now)
        if verdict is None:
            continue
        action, code, reason, rule = verdict
        if action == "delete":
            delete(record, code, reason, rule)
        elif action == "drain":
            drain(record, reason, rule)
        else:
            idle.setdefault(record.machinetype, []).append(record)
    deletes, decisions = _register_breaker(deletes, decisions, records, registered, space)
    for name, machines in sorted(idle.items()):
        settled = _settled(name, records, space, demand.get(name), creating, (recent_idle or {}).get(name, ()), now)
        _retire(name, machines, space, demand.get(name), needed(name), now, drain, hold, settled)
    chosen = set(skip) | {d.machine for d in drains} | {d.machine for d in deletes}
    for record, reason in replaced(records, registered, space, demand, needed, chosen):
        drain(record, reason, "drift")
    drains, decisions = _within_budget(drains, decisions, records, space)
    return drains, deletes, decisions


# This many machines of a machinetype past their register deadline at once, and not one of its machines ever
# registered: more likely its user-data does not make the batch daemon name the machine than every machine broken.
REGISTER_ALARM_MACHINES = 3


def _register_breaker(deletes: list[DeleteOrder], decisions: list[Decision], records: Sequence[MachineRecord],
                      registered: Mapping[str, bool], space: SpaceConfig) -> tuple[list[DeleteOrder], list[Decision]]:
    """Hold back the register-timeout deletes of a machinetype none of whose machines was ever seen registered,
    when there are REGISTER_ALARM_MACHINES of them at least, with a HOLD saying what to check."""
    late: dict[str, int] = {}
    for decision in decisions:
        if decision.rule == "register_timeout":
            late[decision.machinetype] = late.get(decision.machinetype, 0) + 1
    suspect = {name for name, count in late.items() if count >= REGISTER_ALARM_MACHINES}
    if suspect:
        suspect -= {r.machinetype for r in records if r.registered_at is not None or r.name in registered}
    if not suspect:
        return deletes, decisions
    held = {d.machine for d in decisions if d.rule == "register_timeout" and d.machinetype in suspect}
    holds = [Decision(Action.HOLD, space.name, name, (
        f"{late[name]} machines past register_timeout_seconds and none of its machines ever registered with the "
        f"batch system: does its user-data make the batch daemon name the machine (the shipped templates' "
        f"VCYCLE_MACHINE, a Slurm node named after it)? None deleted for it"), rule="register_breaker")
        for name in sorted(suspect)]
    return ([o for o in deletes if o.machine not in held],
            [d for d in decisions if not (d.rule == "register_timeout" and d.machine in held)] + holds)


def pilot_orders(records: Sequence[MachineRecord], space: SpaceConfig, demand: Mapping[str, Demand],
                 needed: Callable[[str], int | None], skip: Collection[str], now: datetime,
                 made: Collection[tuple[str, str | None]] | None = None) -> tuple[list[DrainOrder], list[Decision]]:
    """Drains of drifted machines where no batch system shows them (pilots, containers), with their decisions:
    as for batch machines, but a machine is ready when it runs with a current heartbeat (or runs, for a
    machinetype without heartbeat_file). A drained machine is told so in its heartbeat's answer and ends its
    own work; it is deleted only when it stops, or at its wallclock."""
    suspects = drifting(records, space, made)
    if not suspects:
        return [], []
    ready: dict[str, bool] = {}
    for r in records:
        mt = space.machinetypes.get(r.machinetype)
        if mt is None or r.state is not S.RUNNING or r.machinetype not in suspects:
            continue
        if mt.heartbeat_file is None or (r.heartbeat_at is not None and rules.heartbeat_stale(r, mt, now) is None):
            ready[r.name] = True  # busy, as far as vcycle can tell: the oldest drifted ones go first
    drains: list[DrainOrder] = []
    decisions: list[Decision] = []
    for record, reason in replaced(records, ready, space, demand, needed, skip):
        drains.append(DrainOrder(space.name, record.machinetype, record.name, reason))
        decisions.append(Decision(Action.DRAIN, space.name, record.machinetype, reason, record.name, "drift"))
    return _within_budget(drains, decisions, records, space)


def drifting(records: Sequence[MachineRecord], space: SpaceConfig,
             made: Collection[tuple[str, str | None]] | None = None) -> set[str]:
    """The machinetypes some of whose machines drifted (core/drift.py), found over the distinct (machinetype,
    fingerprint) pairs (``made``, where kept up to date: core/counts.py), which are counted in C: a space whose
    machines are all current costs no pass of Python."""
    pairs = made if made is not None else set(zip(map(MACHINETYPE, records), map(MADE_BY, records), strict=True))
    found = set()
    for name, made_by in pairs:
        mt = space.machinetypes.get(name)
        if mt is not None and drift.drifted(made_by, mt.made_by):
            found.add(name)
    return found


def work(mt: MachinetypeConfig, demand: Demand | None, needed: int | None, processors: int) -> int | None:
    """How many machines of ``processors`` the machinetype's work keeps busy or asks for: its running jobs and
    the machines its idle jobs fill; None when the demand is not known (nothing is rolled on a guess)."""
    if demand is None or not demand.known or needed is None:
        return None
    return math.ceil(demand.running_jobs / (mt.jobs_per_machine or processors)) + max(needed, 0)


def replaced(records: Sequence[MachineRecord], registered: Mapping[str, bool], space: SpaceConfig,
             demand: Mapping[str, Demand], needed: Callable[[str], int | None],
             chosen: Collection[str] = ()) -> list[tuple[MachineRecord, str]]:
    """Drifted machines (core/drift.py) to drain now, with why: as many as the machinetype's running machines
    exceed what its work needs (the planner makes current ones ahead of them), idle ones first, then the oldest.
    The budget (max_disrupting) applies afterwards."""
    found: list[tuple[MachineRecord, str]] = []
    working: dict[str, list[MachineRecord]] = {}
    for r in records:  # one pass, grouped: not one pass per machinetype
        if r.state in WORKING_STATES:
            working.setdefault(r.machinetype, []).append(r)
    for name, mt in sorted(space.machinetypes.items()):
        drifted, ready, draining, size = [], 0, 0, mt.min_processors
        for r in working.get(name, ()):
            size = r.processors
            parts = drift.drifted(r.made_by, mt.made_by)
            if r.state is S.DRAINING:
                draining += 1
            elif not parts:
                ready += r.state is S.RUNNING and r.name in registered
            elif r.name in registered and r.name not in chosen:
                drifted.append((r, parts))
        busy = work(mt, demand.get(name), needed(name), size)
        if not drifted or busy is None:
            continue
        surplus = ready + len(drifted) - max(0, busy - draining)  # the draining ones still run their jobs
        drifted.sort(key=lambda item: (registered[item[0].name], item[0].created_at, item[0].name))
        for record, parts in drifted[:max(0, surplus)]:
            found.append((record, f"drifted ({', '.join(parts)} changed): {ready} current machines run, the work "
                                  f"needs {busy}, {draining} are draining"))
    return found


def _settled(name: str, records: Sequence[MachineRecord], space: SpaceConfig, demand: Demand | None,
             creating: Collection[str], recent: Sequence[int], now: datetime) -> str | None:
    """Why the machinetype retires nothing yet though it has idle machines (it created a moment ago, or its idle
    jobs fell steeply a moment ago), or None."""
    mt = space.machinetypes[name]
    if name in creating:
        return "machines are created for it this cycle"
    last = max((r.created_at for r in records if r.machinetype == name), default=None)
    if last is not None and now - last < timedelta(seconds=mt.retire_after_create_seconds):
        return (f"its last machine was created {int((now - last).total_seconds())}s ago "
                f"(retire_after_create_seconds {mt.retire_after_create_seconds})")
    window = tuple(recent)[-mt.retire_wait_cycles:]
    if demand is not None and demand.known and window and max(window) > 2 * demand.idle_jobs:
        return (f"its idle jobs fell from {max(window)} to {demand.idle_jobs} within the last {len(window)} cycles "
                f"(retire_wait_cycles {mt.retire_wait_cycles})")
    return None


def _within_budget(drains: list[DrainOrder], decisions: list[Decision], records: Sequence[MachineRecord],
                   space: SpaceConfig) -> tuple[list[DrainOrder], list[Decision]]:
    """The drains that keep the machines retiring at once within the machinetypes' and the space's
    max_disrupting (those already draining count), in their order; a HOLD for each machinetype held back."""
    if not drains:
        return drains, decisions
    retiring: dict[str, int] = {}
    working: dict[str, int] = {}
    for r in records:
        if r.state in WORKING_STATES:
            working[r.machinetype] = working.get(r.machinetype, 0) + 1
            if r.state is S.DRAINING:
                retiring[r.machinetype] = retiring.get(r.machinetype, 0) + 1
    space_cap = space.max_disrupting.of(sum(working.values()))
    space_retiring = sum(retiring.values())
    kept: list[DrainOrder] = []
    held: dict[str, list[str]] = {}
    for order in drains:
        name = order.machinetype
        mt = space.machinetypes[name]
        cap = mt.max_disrupting.of(working.get(name, 0))
        if retiring.get(name, 0) >= cap or space_retiring >= space_cap:
            held.setdefault(name, []).append(order.machine)
            continue
        retiring[name] = retiring.get(name, 0) + 1
        space_retiring += 1
        kept.append(order)
    if not held:
        return drains, decisions
    waiting = {m for names in held.values() for m in names}
    decisions = [d for d in decisions if not (d.action is Action.DRAIN and d.machine in waiting)]
    for name, machines in sorted(held.items()):
        mt = space.machinetypes[name]
        decisions.append(Decision(Action.HOLD, space.name, name, (
            f"disruption budget: {retiring.get(name, 0)} of {working.get(name, 0)} {name} machines retiring "
            f"(max_disrupting {mt.max_disrupting}), {space_retiring} of {sum(working.values())} in the space "
            f"(max_disrupting {space.max_disrupting}); {len(machines)} more wait"), rule="disruption_budget"))
    return kept, decisions


# ("delete" | "drain" | "idle", shutdown code, reason, rule)
Verdict = tuple[str, tuple[int, str], str, str]


def _verdict(record: MachineRecord, registered: Mapping[str, bool], mt: MachinetypeConfig, settings: Settings,
             operator_drained: bool, waiting: bool, now: datetime) -> Verdict | None:
    """What one running or draining machine's batch daemon calls for, if anything (``waiting``: its
    machinetype's idle jobs wait for machines)."""
    if record.state is S.DRAINING:
        if record.name not in registered:
            return "delete", DRAINED, "drained: its batch daemon has finished and left", "drain_done"
        why = timeouts.expired(timeouts.DRAINING, record, settings, mt, now)
        return ("delete", DRAINED, why, "drain_timeout") if why else None
    if record.name not in registered:
        why = timeouts.expired(timeouts.REGISTER, record, settings, mt, now) if record.registered_at is None else None
        return ("delete", REGISTER_TIMEOUT, why, "register_timeout") if why else None
    if operator_drained:
        return ("drain", DRAINED, "drained by an operator: its batch daemon finishes its jobs and takes no more",
                "drain_operator")
    if registered[record.name]:
        return None
    if waiting and record.idle_since is not None and record.idle_since == record.registered_at:
        # idle since it registered (any job would have ended that), while jobs wait: they cannot run on it
        why = timeouts.expired(timeouts.FIRST_JOB, record, settings, mt, now)
        if why:
            return "delete", NO_JOB, why, "first_job_timeout"
    return "idle", DRAINED, "", "idle"


def _retire(name: str, machines: list[MachineRecord], space: SpaceConfig, demand: Demand | None,
            needed: int | None, now: datetime, drain: Callable[[MachineRecord, str, str], None],
            hold: Callable[[str, str, str], None], settled: str | None = None) -> None:
    """Drain the machines of ``name`` idle longer than retire_idle_seconds beyond what the idle jobs fill, unless
    ``settled`` says why not yet."""
    after = space.machinetypes[name].retire_idle_seconds
    if not after or demand is None or not demand.known or needed is None:
        return  # never configured, or the demand is not known: nothing is retired on a guess
    cutoff = now - timedelta(seconds=after)
    long_idle = sorted((r for r in machines if r.idle_since is not None and r.idle_since <= cutoff),
                       key=lambda r: (r.idle_since, r.name))
    surplus = len(machines) - max(needed, 0)
    if settled is not None and long_idle[:max(surplus, 0)]:
        hold(name, f"{min(surplus, len(long_idle))} idle machine(s) not retired yet: {settled}", "retire_settle")
        return
    for record in long_idle[:max(surplus, 0)]:
        idle_for = int((now - record.idle_since).total_seconds()) if record.idle_since else 0
        drain(record, f"its batch daemon has had no work for {idle_for}s (retire_idle_seconds {after}); "
                      f"{len(machines)} {name} machines are idle and the idle jobs fill {max(needed, 0)}", "idle")
