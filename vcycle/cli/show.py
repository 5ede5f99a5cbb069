"""What the command line prints: the effective configuration (secrets masked) and the status as tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from vcycle.config.load import secret_keys
from vcycle.core.options import values_of
from vcycle.core.sections import Config

MASK = "********"
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^@\s]+(@)")


def mask_url(value: str) -> str:
    """A URL with any embedded password replaced by the mask."""
    return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(2), value)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return f"{int(value.timestamp())}  # {value.isoformat()}"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return f"{value[0]}:{value[1]}"  # one HOST:PORT
    if isinstance(value, tuple):
        return " ".join(":".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value)
    if isinstance(value, Mapping):
        return " ".join(f"{k}:{v}" for k, v in value.items())
    return mask_url(str(value))


def _section(out: TextIO, title: str, values: Mapping[str, Any], secrets: Iterable[str] = ()) -> None:
    hidden = set(secrets)
    out.write(f"\n[{title}]\n")
    for key in sorted(values):
        value = values[key]
        if value is None or value == () or value == {}:
            continue
        out.write(f"{key} = {MASK if key in hidden else _show(value)}\n")


def grouped_errors(errors: Iterable[Any]) -> list[str]:
    """Errors as lines, those alike but for their machine once, with how many and a few of the machines
    (twenty alike are one line, not twenty)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for error in errors:
        machine = str(error.get("machine") or "") if isinstance(error, Mapping) else ""
        alike = error_text({**error, "machine": ""}) if machine else error_text(error)
        groups.setdefault(alike, []).append((machine, error_text(error)))
    lines = []
    for alike, found in groups.items():
        if len(found) == 1:
            lines.append(found[0][1])
            continue
        named = [machine for machine, _ in found if machine]
        few = f": {', '.join(named[:3])}{', ...' if len(named) > 3 else ''}" if named else ""
        lines.append(f"{alike} (x{len(found)}{few})")
    return lines


def plan_lines(changes: Iterable[tuple[str, Any]], decisions: Iterable[Any], *, each: bool) -> list[str]:
    """What a plan would do, a line per kind of change and decision (with ``each``: a line per machine)."""
    lines: list[str] = []
    synced: dict[tuple[str, str], list[str]] = {}
    for name, change in changes:
        synced.setdefault((change.state.value, change.reason), []).append(name)
    for (state, reason), names in synced.items():
        if each or len(names) == 1:
            lines += [f"sync {name} -> {state}: {reason}" for name in names]
        else:
            lines.append(f"sync {len(names)} machines -> {state}: {reason} ({', '.join(names[:3])}, ...)")
    decided: dict[tuple[str, str, str], list[Any]] = {}
    for decision in decisions:
        key = (decision.action.value, decision.machinetype, decision.rule or decision.reason)
        decided.setdefault(key, []).append(decision)
    for (action, machinetype, _), found in decided.items():
        if each or len(found) == 1:
            lines += [f"{d.action.value} {d.machine or d.machinetype or 'space'}: {d.reason}" for d in found]
        else:
            who = machinetype or "space"
            machines = [d.machine for d in found if d.machine]
            also = f" ({', '.join(machines[:3])}, ...)" if machines else ""
            alike = len({d.reason for d in found}) > 1
            lines.append(f"{action} {len(found)} x {who}{also}: " + (f"{found[0].reason} ... {found[-1].reason}"
                                                                    if alike else found[0].reason))
    return lines


def unconfirmed_line(unconfirmed: Mapping[str, Any]) -> str:
    """A status's ``unconfirmed`` as a line, or "" when every create is confirmed."""
    if not unconfirmed.get("creates"):
        return ""
    return (f"{unconfirmed['creates']} create(s) not yet confirmed by the cloud, the oldest requested at "
            f"{unconfirmed['since']}")


def error_text(error: Any) -> str:
    """One error of a saved cycle report as a line (reports saved before errors had kinds hold plain text)."""
    if not isinstance(error, Mapping):
        return str(error)
    where = " ".join(f"{k}={error[k]}" for k in ("machinetype", "machine") if error.get(k))
    return f"{where}: {error['message']}" if where else str(error["message"])


def _keys(*sections: object) -> tuple[dict[str, Any], set[str]]:
    """The keys of section objects (the core's and a plugin's), and which of them are secret."""
    values: dict[str, Any] = {}
    hidden: set[str] = set()
    for options in sections:
        if options is not None:
            values.update(values_of(options))
            hidden |= secret_keys(options)
    return values, hidden


def describe(config: Config, out: TextIO) -> None:
    """The effective configuration as INI text, with every secret masked."""
    machinetypes = sum(len(s.machinetypes) for s in config.spaces.values())
    out.write(f"# {len(config.files)} file(s): {', '.join(config.files)}\n")
    out.write(f"# {len(config.spaces)} space(s), {machinetypes} machinetype(s), "
              f"{len(config.demands)} demand source(s)\n")
    _section(out, "settings", *_keys(config.settings))
    for demand in config.demands.values():
        _section(out, f"demand {demand.name}", *_keys(demand, demand.options))
    for space in config.spaces.values():
        _section(out, f"space {space.name}", *_keys(space, space.connector))
        for mt in space.machinetypes.values():
            values, hidden = _keys(mt, mt.connector, mt.source)
            values.update({**mt.user_data_options, **mt.user_data_files})
            _section(out, f"machinetype {space.name} {mt.name}", values, hidden)


def show(status: dict[str, Any], console: Console) -> None:
    """Print ``status`` as tables."""
    console.print(f"vcycle manager {status['manager']} at {status['time']}", soft_wrap=True, markup=False)
    _show_managers(status.get("managers", []), console)
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
        line = unconfirmed_line(space.get("unconfirmed") or {})
        if line:
            console.print(f"  {line}", soft_wrap=True, markup=False)
        for mt, waiting in space.get("pilots_waiting", {}).items():
            console.print(f"  {mt}: {waiting} pilot(s) from DIRAC's SiteDirector waiting for machines",
                          soft_wrap=True, markup=False)
        for mt, counts in space.get("drifted", {}).items():
            parts = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "machines")
            console.print(f"  {mt}: {counts['machines']} machine(s) drifted from the configuration ({parts} "
                          "changed); replaced within max_disrupting where the demand is known",
                          soft_wrap=True, markup=False)
        for backoff in space["backoffs"]:
            streak = f" ({backoff['failures']} failures in a row)" if backoff.get("failures", 1) > 1 else ""
            console.print(f"  backoff {backoff['machinetype']} until {backoff['until']}{streak}: {backoff['reason']}",
                          soft_wrap=True, markup=False)
        for sick in space.get("unhealthy", []):
            console.print(f"  unhealthy {sick['machinetype']}: {sick['reason']}; one probe machine at a time",
                          soft_wrap=True, markup=False)
        for cooling in space.get("cooldowns", []):
            console.print(f"  offering {cooling['machinetype']}/{cooling['offering'] or '(any)'} cools until "
                          f"{cooling['until']}: no capacity ({cooling['reason']})", soft_wrap=True, markup=False)
        _show_money_and_lease(space, console)
        _show_cycle(space["last_cycle"], console)


def _show_money_and_lease(space: dict[str, Any], console: Console) -> None:
    for line in (spend_line(space["spend"]) if space.get("spend") else "",
                 lease_line(space["lease"]) if space.get("lease") else ""):
        if line:
            console.print(f"  {line}", soft_wrap=True, markup=False)


def _show_managers(managers: list[dict[str, Any]], console: Console) -> None:
    for manager in managers:
        console.print(f"  manager {manager['holder']} alive since {manager['started']}, holds "
                      f"{manager['spaces']} space(s)", soft_wrap=True, markup=False)


def lease_line(lease: dict[str, Any]) -> str:
    """Who holds a space among the managers sharing the store, since when and why."""
    if lease["holder"] is None:
        return f"lease: held by no manager now (epoch {lease['epoch']}; last: {lease['reason']})"
    return (f"lease: held by {lease['holder']} since {lease['since']} (epoch {lease['epoch']}, renewed within "
            f"{lease['expires_in']:g}s): {lease['reason']}")


def spend_line(money: dict[str, Any]) -> str:
    """The month's money in one line: spent, burn, projection, and the caps that bound it."""
    caps = [f"max_cost_per_hour {money['max_cost_per_hour']:g}" if money.get("max_cost_per_hour") is not None
            else "", f"budget_per_month {money['budget_per_month']:g}" if money.get("budget_per_month") is not None
            else ""]
    line = (f"spend {money['month']}: {money['to_date']:.2f} to date, burning {money['burn_per_hour']:.3f} an hour, "
            f"{money['projected_month']:.2f} projected by the month's end")
    if money.get("unpriced_machines"):
        line += f" ({money['unpriced_machines']} machine(s) of unknown price not counted)"
    named = [c for c in caps if c]
    return line + (f"; caps: {', '.join(named)}" if named else "")


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
        if decision.get("rule") == "stall_breaker":
            console.print(f"    ALARM {who}: {decision['reason']}", markup=False, style="red", soft_wrap=True)
            continue
        console.print(f"    {decision['action']} {who}: {decision['reason']}", markup=False, soft_wrap=True)
    for error in grouped_errors(report["errors"]):
        console.print(f"    error: {error}", markup=False, style="red", soft_wrap=True)
    for warning in report.get("warnings", ()):  # reports saved before warnings existed have none
        console.print(f"    warning: {warning}", markup=False, style="yellow", soft_wrap=True)
