"""``vcycle machines delete --stalled SPACE MACHINETYPE``: an operator's answer to the mass-kill breaker.

When heartbeats stop for many machines at once, the planner deletes none of
them for their heartbeat (core/planner.py, max_stall_kill_fraction) and says
so. An operator who has checked that the machines, not the endpoint, are
sick confirms here: every running machine of the machinetype whose heartbeat
is stale now is asked for deletion, as ``machines delete`` asks for one, and
the next cycle deletes them (an operator's request passes the breaker).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from vcycle.core import rules
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.store import SpaceState, Store


def confirm(config: Config, store: Store, space: str, machinetype: str, now: datetime) -> list[str]:
    """Ask for the deletion of the machinetype's running machines with a stale heartbeat; their names."""
    mt = config.spaces[space].machinetypes[machinetype]
    asked: list[str] = []

    def change(state: SpaceState) -> dict[str, Any]:
        asked.clear()
        records = []
        for record in state.records:
            why = rules.heartbeat_stale(record, mt, now) if (
                record.machinetype == machinetype and record.state is MachineState.RUNNING
                and not record.delete_requested) else None
            if why is not None:
                asked.append(record.name)
                records.append(dataclasses.replace(
                    record, delete_requested=f"operator confirmed the stalled heartbeats: {why}"))
        return {"records": records}

    store.update(space, change)
    return asked
