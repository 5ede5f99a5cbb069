"""``vcycle simulate``: run a configuration against a trace of jobs on simulated clouds; print and write the
report."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vcycle.core.sections import Config
from vcycle.errors import ConfigError, VcycleError
from vcycle.sim import clouds, replay, report, run, trace

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2  # as vcycle/cli/main.py's


def duration(value: str) -> float:
    """``90``, ``90s``, ``30m``, ``36h``, ``7d`` or ``1w``: seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if found is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration (90, 30m, 36h, 7d, 1w)")
    return float(found.group(1)) * UNITS[found.group(2) or "s"]


def _since(value: str) -> datetime:
    try:
        found = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date or time (2026-11-01, 2026-11-01T12:00)") from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def add(command: Any, load: Callable[[argparse.Namespace], Config]) -> None:
    """The subcommand's arguments (``command`` makes it with --config; ``load`` reads the configuration as every
    command does, raising CommandFailed)."""
    sub = command("simulate", simulate_command, "what a configuration does to a trace of jobs, on simulated clouds "
                                                "and a simulated clock: job waits, machine-hours, cost")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", metavar="TRACE",
                        help="jobs: CSV or JSON (id, arrival, cores, memory_mb, duration, machinetype), "
                             "condor_history -json, or sacct --json")
    source.add_argument("--from-store", metavar="URL", help="replay the demand a real store recorded (its "
                                                            "state_url; read only)")
    sub.add_argument("--since", type=_since, metavar="DATE", help="with --from-store: from this date or time "
                                                                  "(ISO 8601, UTC unless it says; default: a week "
                                                                  "ago)")
    sub.add_argument("--clouds", metavar="PATH", help="how the simulated clouds behave (boot times, failures, "
                                                     "interruptions, quota, prices); default: plain clouds")
    sub.add_argument("--seed", type=int, default=0, help="the same seed gives the same report (default 0)")
    sub.add_argument("--until", type=duration, metavar="DURATION",
                     help="simulated time to run (default: until every job is done and every machine gone)")
    sub.add_argument("--report", type=Path, metavar="DIR", help="write report.json, report.html and main.png here")
    sub.add_argument("--compare", metavar="OTHER.conf", help="run this configuration on the same trace too, and "
                                                             "show both side by side")
    sub.set_defaults(load=load)


def simulate_command(args: argparse.Namespace) -> int:
    try:
        if args.trace is not None:
            jobs = trace.read(args.trace)
        else:
            jobs = replay.jobs(args.from_store, args.since or datetime.now(UTC) - timedelta(days=7))
    except trace.TraceError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_FAILED
    setups = [("", args.load(args))]
    if args.compare:
        setups.append((args.compare, args.load(argparse.Namespace(config=[args.compare]))))
    reports = []
    for label, config in setups:
        try:
            specs = clouds.load(args.clouds, sorted(config.spaces))
            result = run.simulate(config, specs, jobs, seed=args.seed, until=args.until)
        except ConfigError as exc:
            for problem in exc.problems:
                sys.stderr.write(f"error: {problem}\n")
            return EXIT_CONFIG
        except VcycleError as exc:
            sys.stderr.write(f"cannot simulate: {exc}\n")
            return EXIT_FAILED
        reports.append(report.summary(result, label or " ".join(args.config or ["the configuration"])))
    for summary in reports:
        _print(summary)
    if args.report is not None:
        try:
            args.report.mkdir(parents=True, exist_ok=True)
            (args.report / "report.json").write_text(report.to_json(reports[0] if len(reports) == 1 else
                                                                    {"compare": reports}))
            (args.report / "report.html").write_text(report.page(reports))
            (args.report / "main.png").write_bytes(report.main_png(reports[0]))
        except OSError as exc:
            sys.stderr.write(f"cannot write the report to {args.report}: {exc.strerror}\n")
            return EXIT_FAILED
        print(f"report: {args.report / 'report.html'} (and report.json, main.png)")
    return EXIT_OK


def _print(summary: dict[str, Any]) -> None:
    core = summary["core_hours"]
    print(f"{summary['label']}: {summary['simulated_seconds'] / 3600:.1f} simulated hours, {summary['cycles']} "
          f"cycles; core-hours used {core['used']:.1f}, busy {core['busy']:.1f}"
          + (f" (efficiency {core['efficiency']:.1%})" if core["efficiency"] is not None else "")
          + f"; cost {summary['cost_total']:.2f}")
    for mt, row in summary["machinetypes"].items():
        w = row["wait_seconds"]
        waits = "no job started" if w["p50"] is None else \
            f"wait p50 {w['p50']:.0f} s, p90 {w['p90']:.0f} s, max {w['max']:.0f} s"
        print(f"  {mt}: {row['jobs']} jobs, {row['finished']} finished, {row['never_started']} never started; "
              f"{waits}")
    if summary["limit_hits"]:
        print("  limits hit: " + ", ".join(f"{k} {v}" for k, v in summary["limit_hits"].items()))
    if summary["backoff_hits"]:
        print("  backoffs: " + ", ".join(f"{k} {v}" for k, v in summary["backoff_hits"].items()))
