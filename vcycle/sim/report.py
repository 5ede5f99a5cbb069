"""The simulation's report: a JSON-ready summary, an HTML page with its plots, and a PNG of the main plot.

Everything is drawn here, with no network and nothing random: the same run
gives the same bytes.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from vcycle.sim import png
from vcycle.sim.run import MAX_SAMPLES, Result

LIMIT_RULES = ("space_limit", "machinetype_limit", "starting_limit", "creation_cap", "quota", "no_limit",
               "ramp_up", "cost_cap", "budget_pace", "site_budget_pace", "no_price")
BACKOFF_RULES = ("backoff", "offering_cooldown", "launch_health", "throttled")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(result: Result, label: str = "") -> dict[str, Any]:
    """The report as a dict of plain values (sorted keys make its JSON the same for the same run)."""
    by_type: dict[str, dict[str, Any]] = {}
    for outcome in result.batch.outcomes.values():
        row = by_type.setdefault(outcome.machinetype, {"jobs": 0, "finished": 0, "never_started": 0,
                                                       "restarts": 0, "_waits": [], "_core_seconds": 0.0})
        row["jobs"] += 1
        row["restarts"] += outcome.restarts
        if outcome.started is None:
            row["never_started"] += 1
        else:
            row["_waits"].append(outcome.started - outcome.job.arrival)
        if outcome.ended is not None:
            row["finished"] += 1
            row["_core_seconds"] += outcome.job.cores * outcome.job.duration
    for row in by_type.values():
        waits = row.pop("_waits")
        row["busy_core_hours"] = _r(row.pop("_core_seconds") / 3600)
        row["wait_seconds"] = {"p50": percentile(waits, 0.5), "p90": percentile(waits, 0.9),
                               "p99": percentile(waits, 0.99), "max": max(waits) if waits else None,
                               "mean": _r(sum(waits) / len(waits)) if waits else None}
    used = result.core_seconds / 3600
    busy = result.busy_seconds / 3600
    return {
        "label": label,
        "simulated_seconds": (result.steps - 1) * result.cycle_seconds if result.steps else 0,
        "cycle_seconds": result.cycle_seconds,
        "cycles": result.steps,
        "machinetypes": dict(sorted(by_type.items())),
        "core_hours": {"used": _r(used), "busy": _r(busy), "efficiency": _r(busy / used) if used else None},
        "cost": {space: _r(cost) for space, cost in sorted(result.cost.items())},
        "cost_total": _r(sum(result.cost.values())),
        "machines": {space: {"made": result.machines_made[space], "failed_booting": result.failed[space],
                             "interrupted": result.interrupted[space]} for space in sorted(result.machines_made)},
        "jobs_restarted": result.batch.requeued,
        "limit_hits": {r: result.rules[r] for r in LIMIT_RULES if result.rules.get(r)},
        "backoff_hits": {r: result.rules[r] for r in BACKOFF_RULES if result.rules.get(r)},
        "decisions_by_rule": dict(sorted(result.rules.items())),
        "errors": dict(sorted(result.errors.items())),
        "series": _series(result),
    }


def _r(value: float) -> float:
    return round(value, 6)


def _series(result: Result) -> dict[str, Any]:
    """Machines by state and jobs over time, one point per sampled step (at most MAX_SAMPLES: every n-th step)."""
    samples = result.samples
    every = max(1, math.ceil(len(samples) / MAX_SAMPLES))
    kept = samples[::every]
    spaces = sorted({s for sample in kept for s in sample.machines})
    types = sorted({t for sample in kept for t in sample.idle})
    return {
        "at": [s.at for s in kept],
        "idle_jobs": {t: [s.idle.get(t, 0) for s in kept] for t in types},
        "running_jobs": {t: [s.running_jobs.get(t, 0) for s in kept] for t in types},
        "machines_running": {sp: [s.machines.get(sp, {}).get("running", 0) for s in kept] for sp in spaces},
        "machines_starting": {sp: [s.machines.get(sp, {}).get("starting", 0) for s in kept] for sp in spaces},
        "cost": {sp: [_r(s.cost.get(sp, 0.0)) for s in kept] for sp in spaces},
    }


def to_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, indent=1) + "\n"


# --- drawing --------------------------------------------------------------------------------------

def main_lines(report: Mapping[str, Any]) -> list[tuple[str, list[float]]]:
    """The main plot: idle jobs of each machinetype and running machines of each space, over time."""
    series = report["series"]
    lines = [(f"idle {t}", [float(v) for v in values]) for t, values in series["idle_jobs"].items()]
    lines += [(f"running machines {sp}", [float(v) for v in values])
              for sp, values in series["machines_running"].items()]
    return lines


def svg(title: str, at: Sequence[float], lines: Sequence[tuple[str, Sequence[float]]], width: int = 760,
        height: int = 260) -> str:
    """A line plot as inline SVG: hours on x, the values on y, a legend."""
    rows = max(1, math.ceil(len(lines) / 2))
    height += 12 * (rows - 1)
    left, right, top, bottom = 50, 10, 24, 28 + 12 * rows
    w, h = width - left - right, height - top - bottom
    end = max(at[-1], 1.0) if at else 1.0
    high = max([max(values, default=0.0) for _, values in lines] + [1.0])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}">', f'<text x="{left}" y="16" font-size="13">{html.escape(title)}'
             '</text>', f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for i in range(5):
        y = top + h - h * i / 4
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{high * i / 4:.0f}'
                     '</text>')
    for i in range(6):  # the last label ends at the plot's right edge, so that it is not cut off
        x = left + w * i / 5
        parts.append(f'<text x="{x:.1f}" y="{top + h + 14}" font-size="10" '
                     f'text-anchor="{"end" if i == 5 else "middle"}">{end * i / 5 / 3600:.1f} h</text>')
    for n, (name, values) in enumerate(lines):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{left + w * t / end:.1f},{top + h - h * v / high:.1f}" for t, v in zip(at, values,
                                                                                                  strict=False))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        parts.append(f'<text x="{left + 8 + 350 * (n % 2)}" y="{top + h + 30 + 12 * (n // 2)}" font-size="11" '
                     f'fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def main_png(report: Mapping[str, Any]) -> bytes:
    series = report["series"]
    return png.plot(series["at"], [values for _, values in main_lines(report)], COLOURS)


def page(reports: Sequence[Mapping[str, Any]]) -> str:
    """The HTML report of one run, or of several side by side (``--compare``)."""
    columns = []
    for report in reports:
        series = report["series"]
        cost = [(f"cost {sp}", [float(v) for v in values]) for sp, values in series["cost"].items()]
        running = [(f"running {t}", [float(v) for v in values]) for t, values in series["running_jobs"].items()]
        columns.append("".join([
            f"<section><h2>{html.escape(report['label'] or 'simulation')}</h2>",
            _facts(report),
            svg("idle jobs and running machines", series["at"], main_lines(report)),
            svg("running jobs", series["at"], running),
            svg("cost so far", series["at"], cost),
            _waits(report), _rules(report), "</section>"]))
    style = ("body{font-family:sans-serif;margin:1em}main{display:flex;gap:2em;flex-wrap:wrap}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right}th{background:#eee}")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vcycle simulate</title>"
            f"<style>{style}</style></head><body><h1>vcycle simulate</h1><main>{''.join(columns)}</main>"
            "</body></html>\n")


def _facts(report: Mapping[str, Any]) -> str:
    core = report["core_hours"]
    efficiency = "n/a" if core["efficiency"] is None else f"{core['efficiency']:.1%}"
    rows = [("simulated", f"{report['simulated_seconds'] / 3600:.1f} h in {report['cycles']} cycles"),
            ("core-hours used / busy", f"{core['used']:.1f} / {core['busy']:.1f} (efficiency {efficiency})"),
            ("cost", ", ".join(f"{sp} {c:.2f}" for sp, c in report["cost"].items()) +
             f" (total {report['cost_total']:.2f})"),
            ("jobs restarted", str(report["jobs_restarted"]))]
    for space, m in report["machines"].items():
        rows.append((f"machines {space}", f"{m['made']} made, {m['failed_booting']} failed booting, "
                                          f"{m['interrupted']} interrupted"))
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + \
        "</table>"


def _waits(report: Mapping[str, Any]) -> str:
    head = "<tr><th>machinetype</th><th>jobs</th><th>finished</th><th>never started</th><th>p50</th><th>p90</th>" \
           "<th>p99</th><th>max wait (s)</th></tr>"
    rows = []
    for mt, row in report["machinetypes"].items():
        w = row["wait_seconds"]
        cells = [row["jobs"], row["finished"], row["never_started"],
                 *("" if w[k] is None else f"{w[k]:.0f}" for k in ("p50", "p90", "p99", "max"))]
        rows.append(f"<tr><th>{html.escape(mt)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<h3>Job waits</h3><table>{head}{''.join(rows)}</table>"


def _rules(report: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(rule)}</th><td>{n}</td></tr>"
                   for rule, n in report["decisions_by_rule"].items())
    return f"<h3>Decisions by rule</h3><table>{rows}</table>"
