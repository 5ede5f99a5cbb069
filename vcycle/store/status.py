"""What an operator reads: spaces, machinetypes and machines by state, backoffs, last cycles.

``collect`` builds one JSON-ready dict from the configuration and the store;
``vcycle status`` prints it as tables (vcycle/cli/show.py) or JSON, and the
HTTPS endpoint serves the same dict. Nothing secret is in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from vcycle.core import drift, health, rules
from vcycle.core.model import MachineRecord
from vcycle.core.sections import Config, SpaceConfig
from vcycle.core.states import HOLDS_PROCESSORS, MachineState
from vcycle.store import Store, leases, schema
from vcycle.store.pilots import PilotBook


def collect(config: Config, store: Store, now: datetime) -> dict[str, Any]:
    """The status of every configured space (and of spaces the store still holds).

    Counted by the database (one grouped query), not by loading the records: a space of 50,000 machines
    costs what a small one does."""
    reports = store.last_reports()
    held, managers = _leases(store)
    known, counts, makers = _tally(store)
    cooling = _cooling(config, store, now)
    sick = unhealthy(config, store)
    spaces: dict[str, Any] = {}
    for name in sorted(set(config.spaces) | set(known)):
        version, draining, backoff_rows = known.get(name, (0, [], []))
        space = config.spaces.get(name)
        tally = counts.get(name, {})
        by_type: dict[str, dict[str, int]] = {mt: {} for mt in (space.machinetypes if space else ())}
        for (machinetype, state), (n, _, _) in sorted(tally.items()):  # every configured machinetype is shown
            by_type.setdefault(machinetype, {})[state] = n
        backoffs = []
        for machinetype, last_abort_at, reason, failures in backoff_rows:
            mt = space.machinetypes.get(machinetype) if space else None
            if mt is None:
                continue
            until = last_abort_at + timedelta(seconds=rules.hold_seconds(mt.backoff_seconds, failures, mt))
            if until > now:
                backoffs.append({"machinetype": machinetype, "until": until.isoformat(), "reason": reason,
                                 "failures": failures})
        requested = [(n, first) for (_, state), (n, _, first) in tally.items() if state == MachineState.REQUESTED.value]
        spaces[name] = {
            "configured": space is not None,
            "api": space.api if space else None,
            "processors_limit": space.processors_limit if space else None,
            "processors_held": sum(p for (_, state), (_, p, _) in tally.items() if state in _HOLDING),
            "version": version,
            "draining": draining,
            "machinetypes": {mt: dict(sorted(c.items())) for mt, c in sorted(by_type.items())},
            "backoffs": backoffs,
            "cooldowns": cooling.get(name, []),
            "unhealthy": [{"machinetype": mt, "reason": why} for mt, why in sorted(sick.get(name, {}).items())],
            "unconfirmed": {"creates": sum(n for n, _ in requested),
                            "since": min(f for _, f in requested).isoformat(timespec="seconds") if requested
                            else None},
            "drifted": _drifted(space, makers.get(name, {})),
            "pilots_waiting": _pilots_waiting(config, store, name),
            "spend": _spend(space, reports.get(name)),
            "lease": held.get(name),
            "last_cycle": reports.get(name),
        }
    return {"manager": config.settings.manager_name, "time": now.isoformat(), "managers": managers,
            "spaces": spaces}


def _leases(store: Store) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Who holds each space, since when, under which epoch, and the managers alive, where managers share the
    store (none where one manager has it alone)."""
    now, found, alive, _ = leases.status(store)

    def when(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    held = {lease.space: {"holder": lease.holder if lease.live(now) else None, "epoch": lease.epoch,
                          "since": when(lease.since), "expires_in": round(lease.expires - now, 1),
                          "reason": lease.reason} for lease in found}
    managers = [{"holder": holder, "started": when(started), "spaces": sum(
        1 for lease in found if lease.holder == holder and lease.live(now))} for holder, started, _ in alive]
    return held, managers


def _spend(space: SpaceConfig | None, report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The month's money as the last cycle counted it, and the caps: None where the space names no price."""
    money = (report or {}).get("spend")
    if space is None or not money:
        return None
    return {**money, "max_cost_per_hour": space.max_cost_per_hour, "budget_per_month": space.budget_per_month}


_HOLDING = {s.value for s in HOLDS_PROCESSORS}
Tally = dict[str, dict[tuple[str, str], tuple[int, int, datetime]]]  # space -> (mt, state) -> n, processors, first
Known = dict[str, tuple[int, list[str], list[tuple[str, datetime, str, int]]]]  # space -> version, draining, backoffs
Makers = dict[str, dict[str, dict[str, int]]]  # space -> machinetype -> made_by -> live machines


def unhealthy(config: Config, store: Store) -> dict[str, dict[str, str]]:
    """space -> machinetype -> why its launches make it unhealthy now (core/health.py), for the configured ones."""
    found: dict[str, dict[str, str]] = {}
    for space, kept in store.launch_outcomes().items():
        configured = config.spaces.get(space)
        for name, history in kept.items():
            mt = configured.machinetypes.get(name) if configured else None
            why = health.unhealthy(history, mt) if mt is not None else None
            if why is not None:
                found.setdefault(space, {})[name] = why
    return found


def _cooling(config: Config, store: Store, now: datetime) -> dict[str, list[dict[str, str]]]:
    """space -> the offerings cooling now after a create found no capacity (one small table)."""
    d = schema.cooldowns
    with store._begin() as c:
        rows = c.execute(select(d.c.space, d.c.machinetype, d.c.offering, d.c.since, d.c.reason, d.c.failures)
                         .order_by(d.c.space, d.c.machinetype, d.c.offering)).all()
    found: dict[str, list[dict[str, str]]] = {}
    for space, machinetype, offering, since, reason, failures in rows:
        configured = config.spaces.get(space)
        mt = configured.machinetypes.get(machinetype) if configured else None
        if mt is None:
            continue
        until = since + timedelta(seconds=rules.hold_seconds(mt.offering_cooldown_seconds, failures, mt))
        if until > now:
            found.setdefault(space, []).append({"machinetype": machinetype, "offering": offering,
                                                "until": until.isoformat(), "reason": reason})
    return found


def _tally(store: Store) -> tuple[Known, Tally, Makers]:
    """The spaces the store knows (version, draining, backoffs), and their live machines counted by machinetype
    and state, with their processors and the earliest creation."""
    m, b = schema.machines, schema.backoffs
    counted = (select(m.c.space, m.c.machinetype, m.c.state, m.c.made_by, func.count(), func.sum(m.c.processors),
                      func.min(m.c.created_at))
               .where(m.c.state != MachineState.GONE.value)
               .group_by(m.c.space, m.c.machinetype, m.c.state, m.c.made_by))
    with store._begin() as c:
        spaces = c.execute(select(schema.spaces.c.name, schema.spaces.c.version, schema.spaces.c.draining)).all()
        backoffs = c.execute(select(b.c.space, b.c.machinetype, b.c.last_abort_at, b.c.reason, b.c.failures)).all()
        rows = c.execute(counted).all()
    known: Known = {r.name: (r.version, sorted(json.loads(r.draining)), []) for r in spaces}
    for r in backoffs:
        if r.space in known:
            known[r.space][2].append((r.machinetype, r.last_abort_at, r.reason, r.failures))
    tally: Tally = {}
    makers: Makers = {}
    for space, mt, state, made_by, n, processors, first in rows:
        found = tally.setdefault(space, {})
        before = found.get((mt, state))
        found[(mt, state)] = (int(n), int(processors or 0), first) if before is None else (
            before[0] + int(n), before[1] + int(processors or 0), min(before[2], first))
        if made_by:
            makers.setdefault(space, {}).setdefault(mt, {})[made_by] = \
                makers.get(space, {}).get(mt, {}).get(made_by, 0) + int(n)
    return known, tally, makers


def _drifted(space: SpaceConfig | None, makers: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Per machinetype, its machines that a configuration change left behind, in all and by the part that changed."""
    found: dict[str, dict[str, int]] = {}
    for name, by_maker in sorted(makers.items()):
        mt = space.machinetypes.get(name) if space else None
        if mt is None:
            continue
        for made_by, n in by_maker.items():
            parts = drift.drifted(made_by, mt.made_by)
            if parts:
                counts = found.setdefault(name, {"machines": 0})
                counts["machines"] += n
                for part in parts:
                    counts[part] = counts.get(part, 0) + n
    return found


def unconfirmed(records: Iterable[MachineRecord]) -> dict[str, Any]:
    """How many creates the cloud has not confirmed yet (REQUESTED), and since when."""
    requested = [r.created_at for r in records if r.state is MachineState.REQUESTED]
    return {"creates": len(requested), "since": min(requested).isoformat(timespec="seconds") if requested else None}


def _pilots_waiting(config: Config, store: Store, space: str) -> dict[str, int]:
    """Pilots a pilot factory handed in (DIRAC's SiteDirector) that wait for machines, per machinetype."""
    return dict(sorted(PilotBook(store).pending_counts(space).items()))
