"""What each page of the status page shows: read from the configuration and the store, as plain values for
the templates (vcycle/web/templates/), plots drawn (vcycle/web/plots.py).

No HTTP here (vcycle/web/ui.py answers requests) and nothing secret: records
are shown through the API's own view, without their token hash.
"""

from __future__ import annotations

import collections
import json
import math
from datetime import datetime, timedelta
from typing import Any

from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.store import Store
from vcycle.store import status as status_module
from vcycle.store.browse import Browse, Page
from vcycle.store.joboutputs import Joboutputs
from vcycle.store.series import Series
from vcycle.web import plots
from vcycle.web.operator_routes import STATES, machine_view

DEMAND = ("idle", "running_jobs", "running")
WINDOWS = {"1h": 1, "6h": 6, "24h": 24, "3d": 72, "7d": 168, "14d": 336}  # the plots' windows, in hours


def overview(config: Config, store: Store, now: datetime, window: str, hours: int) -> dict[str, Any]:
    """Every space in a row, the warnings and errors of their last cycles, and the plots of them all."""
    found = status_module.collect(config, store, now)
    since = now - timedelta(hours=hours)
    points = Series(store).read_all(since)
    frames = [plots.frame(p, since, now) for p in points.values()] or [plots.frame([], since, now)]
    total = plots.add(frames)
    every = [point for p in points.values() for point in p]
    rows, notices = [], []
    for name, space in found["spaces"].items():
        last = space["last_cycle"] or {}
        notices += [{"space": name, "kind": "alarm", "text": f"{d['machinetype']}: {d['reason']}"}
                    for d in last.get("decisions", []) if d.get("rule") == "stall_breaker"]
        notices += [{"space": name, "kind": "warning", "text": w} for w in last.get("warnings", [])]
        notices += [{"space": name, "kind": "error", "text": f"{e.get('kind')}: {e.get('message', '')}"}
                    for e in last.get("errors", [])]
        notices += [{"space": name, "kind": "backoff", "text": f"{b['machinetype']} until {b['until']}: "
                     f"{b['reason']}"} for b in space["backoffs"]]
        rows.append(_space_row(name, space, points.get(name, []), now))
    return {
        "title": "vcycle status", "now": now, "window": window, "windows": _windows(config),
        "spaces": rows, "notices": notices, "states": plots.STATES,
        "plots": [
            plots.stacked(total, plots.STATES, "Machines by state, all spaces"),
            plots.lines(total, DEMAND, "Demand (idle and running jobs) against running machines"),
            plots.bars(plots.hourly(every, since, now), plots.EVENTS, "Creates, deletes and aborts per hour"),
            plots.histogram(Browse(store).heartbeat_ages(now), "Heartbeat ages of running and draining machines"),
        ],
    }


def _space_row(name: str, space: dict[str, Any], points: list[Any], now: datetime) -> dict[str, Any]:
    by_state: collections.Counter[str] = collections.Counter()
    for counts in space["machinetypes"].values():
        by_state.update(counts)
    latest = points[-1][1] if points else {}
    last = space["last_cycle"]
    return {
        "name": name, "api": space["api"], "configured": space["configured"],
        "held": space["processors_held"], "limit": space["processors_limit"],
        "by_state": {s: by_state[s] for s in plots.STATES if by_state[s]},
        "idle": sum(c.get("idle", 0) for c in latest.values()) if latest else None,
        "ok": last["ok"] if last else None, "finished": ago(last["finished_at"], now) if last else None,
        "errors": len(last.get("errors", [])) if last else 0, "warnings": len(last.get("warnings", [])) if last else 0,
        "backoffs": len(space["backoffs"]), "draining": space["draining"],
        "unconfirmed": space["unconfirmed"]["creates"],
    }


def space(config: Config, store: Store, now: datetime, name: str, window: str,
          hours: int) -> dict[str, Any] | None:
    """One space: its machinetypes with their limits and plots, its last cycles' decisions and errors."""
    found = status_module.collect(config, store, now)["spaces"].get(name)
    if found is None:
        return None
    since = now - timedelta(hours=hours)
    points = Series(store).read(name, since)
    configured = config.spaces.get(name)
    types = []
    for mt, counts in found["machinetypes"].items():
        c = configured.machinetypes.get(mt) if configured else None
        f = plots.frame(points, since, now, machinetype=mt)
        types.append({
            "name": mt, "counts": counts, "configured": c is not None,
            "limits": {} if c is None else {
                "target_share": c.target_share, "processors_limit": c.processors_limit,
                "max_starting_processors": c.max_starting_processors, "backoff_seconds": c.backoff_seconds,
                "fizzle_seconds": c.fizzle_seconds, "max_wallclock_seconds": c.max_wallclock_seconds},
            "plots": [plots.stacked(f, plots.STATES, f"{mt}: machines by state"),
                      plots.lines(f, DEMAND, f"{mt}: demand against running machines")],
        })
    browse = Browse(store)
    whole = plots.frame(points, since, now)
    return {
        "title": f"space {name}", "now": now, "window": window, "windows": _windows(config), "name": name,
        "space": found, "machinetypes": types, "states": plots.STATES, "reports": browse.reports(name, 10),
        "plots": [plots.stacked(whole, plots.STATES, f"{name}: machines by state"),
                  plots.bars(plots.hourly(points, since, now), plots.EVENTS, f"{name}: creates, deletes and aborts "
                             "per hour"),
                  plots.histogram(browse.heartbeat_ages(now, name), f"{name}: heartbeat ages")],
    }


def machines(config: Config, store: Store, now: datetime, page: Page, space: str | None, state: str | None,
             text: str | None) -> dict[str, Any]:
    """One page of the machines table, with what the filters and the page links need."""
    number = page.offset // page.limit + 1
    pages = max(1, math.ceil(page.total / page.limit))
    return {
        "title": "machines", "now": now, "rows": [machine_view(r) for r in page.records], "total": page.total,
        "number": number, "pages": pages, "first": page.offset + 1 if page.total else 0,
        "last": page.offset + len(page.records), "spaces": sorted(set(config.spaces) | ({space} if space else set())),
        "all_states": STATES, "space": space or "", "state": state or "", "q": text or "",
    }


def machine(store: Store, joboutputs: Joboutputs, now: datetime, space: str, name: str) -> dict[str, Any] | None:
    """One machine: its record, its whole history as a timeline, its MJF values, joboutputs and heartbeat."""
    found = store.find(name, space)
    if not found:
        return None
    record = found[0]
    history = store.history(space, name)
    changes = [(h.state.value, h.at, h.reason, h.cause) for h in history]
    end = record.last.at if record.state is MachineState.GONE and record.last else now
    features = json.loads(record.features or "{}")
    beat = Browse(store).heartbeat(space, name)
    files = [{"name": f, "bytes": size} for f, size in joboutputs.sizes(space, name)]
    detail = None
    if beat is not None and beat.detail:
        try:
            detail = json.dumps(json.loads(beat.detail), indent=2, sort_keys=True)
        except ValueError:
            detail = beat.detail
    return {
        "title": f"machine {name}", "now": now, "record": machine_view(record), "history": changes,
        "timeline": plots.timeline(changes, end), "machinefeatures": features.get("machinefeatures", {}),
        "jobfeatures": features.get("jobfeatures", {}), "files": files, "beat": beat, "beat_detail": detail,
    }


def _windows(config: Config) -> list[str]:
    """The plot windows that the kept history can fill."""
    return [w for w, h in WINDOWS.items() if h <= max(24, config.settings.history_days * 24)]


def ago(value: datetime | str | None, now: datetime) -> str:
    """How long before ``now``: '42 s ago', '5 min ago', '3 h ago', '2 d ago'; or after it: 'in 7 h'; '' for none."""
    if value is None:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = (now - at).total_seconds()
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if span >= 2 * size or (unit == "min" and span >= size) or unit == "s":
            amount = f"{int(span // size)} {unit}"
            return f"{amount} ago" if seconds >= 0 else f"in {amount}"
    return ""
