"""What an operator reads: spaces, machinetypes and machines by state, backoffs, last cycles.

``collect`` builds one JSON-ready dict from the configuration and the store;
``vcycle status`` prints it as tables (rich) or JSON, and the HTTPS
endpoint serves the same dict. Nothing secret is in it.
"""

from __future__ import annotations

import collections
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from vcycle.config import Config
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
        by_type: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for record in records:
            by_type[record.machinetype][record.state.value] += 1
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
            "processors_held": sum(r.processors for r in records if r.state.value != "create_failed"),
            "version": state.version if state else 0,
            "draining": sorted(state.draining) if state else [],
            "machinetypes": {mt: dict(sorted(c.items())) for mt, c in sorted(by_type.items())},
            "backoffs": backoffs,
            "pilots_waiting": _pilots_waiting(config, store, name),
            "last_cycle": reports.get(name),
        }
    return {"manager": config.settings.manager_name, "time": now.isoformat(), "spaces": spaces}


def _pilots_waiting(config: Config, store: Store, space: str) -> dict[str, int]:
    """Pilots DIRAC's SiteDirector submitted that wait for machines, per machinetype (spaces that take any)."""
    configured = config.spaces.get(space)
    if configured is None or not any(config.takes_pilots(mt) for mt in configured.machinetypes.values()):
        return {}
    return dict(sorted(PilotBook(store).pending_counts(space).items()))


def show(status: dict[str, Any], console: Console) -> None:
    """Print ``status`` as tables."""
    console.print(f"vcycle manager {status['manager']} at {status['time']}", soft_wrap=True, markup=False)
    for name, space in status["spaces"].items():
        limit = space["processors_limit"] if space["processors_limit"] is not None else "quota"
        title = f"space {name} ({space['api'] or 'not configured'}): {space['processors_held']}/{limit} processors"
        if space["draining"]:
            title += f", draining {' '.join(space['draining'])}"
        console.print(title, soft_wrap=True, markup=False)
        table = Table()
        states = sorted({s for counts in space["machinetypes"].values() for s in counts})
        table.add_column("machinetype")
        for state in states:
            table.add_column(state, justify="right")
        for mt, counts in space["machinetypes"].items():
            table.add_row(mt, *(str(counts.get(s, 0)) for s in states))
        console.print(table)
        for mt, waiting in space.get("pilots_waiting", {}).items():
            console.print(f"  {mt}: {waiting} pilot(s) from DIRAC's SiteDirector waiting for machines",
                          soft_wrap=True, markup=False)
        for backoff in space["backoffs"]:
            console.print(f"  backoff {backoff['machinetype']} until {backoff['until']}: {backoff['reason']}",
                          soft_wrap=True, markup=False)
        _show_cycle(space["last_cycle"], console)


def _show_cycle(report: dict[str, Any] | None, console: Console) -> None:
    if report is None:
        console.print("  no cycle yet")
        return
    verdict = "ok" if report["ok"] else "with errors"
    console.print(f"  last cycle {report['finished_at']} {verdict}: {report['counts'].get('creates', 0)} created, "
                  f"{report['counts'].get('deletes', 0)} deleted", soft_wrap=True, markup=False)
    seen = set()
    for decision in report["decisions"]:
        key = (decision["action"], decision["machinetype"], decision["reason"])
        if decision["action"] == "create" or key in seen:
            continue
        seen.add(key)
        who = decision["machine"] or decision["machinetype"] or "space"
        console.print(f"    {decision['action']} {who}: {decision['reason']}", markup=False, soft_wrap=True)
    for error in report["errors"]:
        console.print(f"    error: {error}", markup=False, style="red", soft_wrap=True)
    for warning in report.get("warnings", ()):  # reports saved before warnings existed have none
        console.print(f"    warning: {warning}", markup=False, style="yellow", soft_wrap=True)
