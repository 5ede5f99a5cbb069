"""The ``vcycle`` command line.

Every sub-command turns vcycle's own errors into a clear message and an exit
status; a traceback reaching a user is a bug. Exit statuses: 0 success,
1 the work failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from vcycle import __version__
from vcycle.config import Config, load_config
from vcycle.errors import ConfigError, ConfigProblem

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
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
    if isinstance(value, tuple):
        return " ".join(":".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value)
    return mask_url(str(value))


def _section(out: TextIO, title: str, values: Mapping[str, Any], secrets: Iterable[str] = ()) -> None:
    hidden = set(secrets)
    out.write(f"\n[{title}]\n")
    for key in sorted(values):
        value = values[key]
        if value is None or value == ():
            continue
        out.write(f"{key} = {MASK if key in hidden else _show(value)}\n")


def describe(config: Config, out: TextIO) -> None:
    """The effective configuration as INI text, with every secret masked."""
    machinetypes = sum(len(s.machinetypes) for s in config.spaces.values())
    out.write(f"# {len(config.files)} file(s): {', '.join(config.files)}\n")
    out.write(f"# {len(config.spaces)} space(s), {machinetypes} machinetype(s), "
              f"{len(config.demands)} demand source(s)\n")
    settings = {name: getattr(config.settings, name) for name in config.settings.__slots__}
    _section(out, "settings", settings)
    for demand in config.demands.values():
        _section(out, f"demand {demand.name}", {"type": demand.type, **demand.values})
    for space in config.spaces.values():
        _section(out, f"space {space.name}", {"api": space.api, **space.values}, space.secrets)
        for mt in space.machinetypes.values():
            _section(out, f"machinetype {space.name} {mt.name}", mt.values, mt.secrets)


def print_problems(problems: Iterable[ConfigProblem], kind: str, out: TextIO) -> None:
    for problem in problems:
        out.write(f"{kind}: {problem}\n")


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_problems(exc.problems, "error", sys.stderr)
        sys.stderr.write(f"configuration invalid: {len(exc.problems)} error(s)\n")
        return EXIT_CONFIG
    print_problems(config.warnings, "warning", sys.stderr)
    describe(config, sys.stdout)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcycle", description="Keeps cloud spaces filled with pilot machines.")
    parser.add_argument("--version", action="version", version=f"vcycle {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check-config", help="validate the configuration and print it, secrets masked")
    check.add_argument("--config", action="append", metavar="PATH",
                       help="a file or a directory of *.conf (repeatable); default: the old vcycle's locations")
    check.set_defaults(run=check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_FAILED
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
