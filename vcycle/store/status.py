"""What an operator reads: spaces, machinetypes and machines by state, backoffs, last cycles.

``collect`` builds one JSON-ready dict from the configuration and the store;
``vcycle status`` prints it as tables (vcycle/cli/show.py) or JSON, and the
HTTPS endpoint serves the same dict. Nothing secret is in it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from vcycle.core.model import MachineRecord
from vcycle.core.sections import Config
from vcycle.core.states import HOLDS_PROCESSORS, MachineState
from vcycle.store import Store
from vcycle.store.pilots import PilotBook


def collect(config: Config, store: Store, now: datetime) -> dict[str, Any]:
    """The status of every configured space (and of spaces the store still holds)."""
    reports = store.last_reports()
    known = store.spaces()
    spaces: dict[str, Any] = {}
    for name in sorted(set(config.spaces) | set(known)):
        state = known.get(name)
        space = config.spaces.get(name)
        records = state.records if state else ()
        by_type: dict[str, collections.Counter[str]] = {mt: collections.Counter() for mt in
                                                          (space.machinetypes if space else ())}
        for record in records:  # every configured machinetype is shown, those without machines too
            by_type.setdefault(record.machinetype, collections.Counter())[record.state.value] += 1
        backoffs = []
        for backoff in (state.backoffs.values() if state else ()):
            mt = space.machinetypes.get(backoff.machinetype) if space else None
            if mt is None:
                continue
            until = backoff.last_abort_at + timedelta(seconds=mt.backoff_seconds)
            if until > now:
                backoffs.append({"machinetype": backoff.machinetype, "until": until.isoformat(),
                                 "reason": backoff.reason})
        spaces[name] = {
            "configured": space is not None,
            "api": space.api if space else None,
            "processors_limit": space.processors_limit if space else None,
            "processors_held": sum(r.processors for r in records if r.state in HOLDS_PROCESSORS),
            "version": state.version if state else 0,
            "draining": sorted(state.draining) if state else [],
            "machinetypes": {mt: dict(sorted(c.items())) for mt, c in sorted(by_type.items())},
            "backoffs": backoffs,
            "unconfirmed": unconfirmed(records),
            "pilots_waiting": _pilots_waiting(config, store, name),
            "last_cycle": reports.get(name),
        }
    return {"manager": config.settings.manager_name, "time": now.isoformat(), "spaces": spaces}


def unconfirmed(records: Iterable[MachineRecord]) -> dict[str, Any]:
    """How many creates the cloud has not confirmed yet (REQUESTED), and since when."""
    requested = [r.created_at for r in records if r.state is MachineState.REQUESTED]
    return {"creates": len(requested), "since": min(requested).isoformat(timespec="seconds") if requested else None}


def _pilots_waiting(config: Config, store: Store, space: str) -> dict[str, int]:
    """Pilots a pilot factory handed in (DIRAC's SiteDirector) that wait for machines, per machinetype."""
    return dict(sorted(PilotBook(store).pending_counts(space).items()))
