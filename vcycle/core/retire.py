"""Machines and their batch daemons: register timeouts, drains and retirement.

Where a space's machines run a batch daemon (an HTCondor startd that
advertises its vcycle machine name, a slurmd that joins as a node named after
it), the batch system says which machines are registered in it and which
have work. From that, per machinetype:

- a running machine whose daemon never registered within
  ``register_timeout_seconds`` is deleted with '500 Batch daemon did not
  register' (an abort: the machinetype backs off);
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

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta

from vcycle.core import timeouts
from vcycle.core.model import Action, Decision, DeleteOrder, Demand, DrainOrder, MachineRecord
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.core.states import WORKING_STATES, MachineState

S = MachineState
REGISTER_TIMEOUT = (500, "Batch daemon did not register")
DRAINED = (100, "Shutdown as requested: drained")


def batch_orders(records: Sequence[MachineRecord], registered: Mapping[str, bool], space: SpaceConfig,
                 settings: Settings, demand: Mapping[str, Demand], needed: Callable[[str], int | None],
                 draining: Collection[str], skip: Collection[str],
                 now: datetime) -> tuple[list[DrainOrder], list[DeleteOrder], list[Decision]]:
    """Drains, deletes and their decisions for the machines not already in ``skip`` (being deleted).

    ``needed(machinetype)`` is how many machines the machinetype's idle jobs fill (None: unknown).
    """
    drains: list[DrainOrder] = []
    deletes: list[DeleteOrder] = []
    decisions: list[Decision] = []
    idle: dict[str, list[MachineRecord]] = {}

    def delete(record: MachineRecord, code: tuple[int, str], reason: str, rule: str) -> None:
        deletes.append(DeleteOrder(space.name, record.machinetype, record.name, record.cloud_id, *code, reason))
        decisions.append(Decision(Action.DELETE, space.name, record.machinetype, reason, record.name, rule))

    def drain(record: MachineRecord, reason: str, rule: str) -> None:
        drains.append(DrainOrder(space.name, record.machinetype, record.name, reason))
        decisions.append(Decision(Action.DRAIN, space.name, record.machinetype, reason, record.name, rule))

    for record in records:
        mt = space.machinetypes.get(record.machinetype)
        if mt is None or record.name in skip or record.state not in WORKING_STATES:
            continue
        verdict = _verdict(record, registered, mt, settings, record.machinetype in draining or "*" in draining, now)
        if verdict is None:
            continue
        action, code, reason, rule = verdict
        if action == "delete":
            delete(record, code, reason, rule)
        elif action == "drain":
            drain(record, reason, rule)
        else:
            idle.setdefault(record.machinetype, []).append(record)
    for name, machines in sorted(idle.items()):
        _retire(name, machines, space, demand.get(name), needed(name), now, drain)
    return drains, deletes, decisions


# ("delete" | "drain" | "idle", shutdown code, reason, rule)
Verdict = tuple[str, tuple[int, str], str, str]


def _verdict(record: MachineRecord, registered: Mapping[str, bool], mt: MachinetypeConfig, settings: Settings,
             operator_drained: bool, now: datetime) -> Verdict | None:
    """What one running or draining machine's batch daemon calls for, if anything."""
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
    return None if registered[record.name] else ("idle", DRAINED, "", "idle")


def _retire(name: str, machines: list[MachineRecord], space: SpaceConfig, demand: Demand | None,
            needed: int | None, now: datetime, drain: Callable[[MachineRecord, str, str], None]) -> None:
    """Drain the machines of ``name`` idle longer than retire_idle_seconds beyond what the idle jobs fill."""
    after = space.machinetypes[name].retire_idle_seconds
    if not after or demand is None or not demand.known or needed is None:
        return  # never configured, or the demand is not known: nothing is retired on a guess
    cutoff = now - timedelta(seconds=after)
    long_idle = sorted((r for r in machines if r.idle_since is not None and r.idle_since <= cutoff),
                       key=lambda r: (r.idle_since, r.name))
    surplus = len(machines) - max(needed, 0)
    for record in long_idle[:max(surplus, 0)]:
        idle_for = int((now - record.idle_since).total_seconds()) if record.idle_since else 0
        drain(record, f"its batch daemon has had no work for {idle_for}s (retire_idle_seconds {after}); "
                      f"{len(machines)} {name} machines are idle and the idle jobs fill {max(needed, 0)}", "idle")
