"""The ``vcycle`` command line.

Every sub-command turns vcycle's own errors into a clear message and an exit
status; a traceback reaching a user is a bug. Exit statuses: 0 success,
1 the work failed (a space failed, the store cannot be opened), 2 bad
configuration or usage, 3 another vcycle holds the lock.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console

from vcycle import __version__
from vcycle.cli import show, simulate, stalled
from vcycle.cli.show import MASK, describe, mask_url
from vcycle.config import load_config
from vcycle.core.model import MachineRecord
from vcycle.core.options import host_port
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.errors import (
    CommandFailed,
    ConfigError,
    ConfigProblem,
    LockHeld,
    NoStore,
    StaleState,
    StoreError,
    VcycleError,
)
from vcycle.loop.cycle import observe
from vcycle.loop.daemon import Daemon, Locks, Manager, shared
from vcycle.loop.leases import Holder
from vcycle.store import SpaceState, Store, status
from vcycle.userdata.sources import Fetcher, template_cache

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = 0, 1, 2, 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def print_problems(problems: Iterable[ConfigProblem], kind: str, out: TextIO) -> None:
    for problem in problems:
        out.write(f"{kind}: {problem}\n")


def check_config(args: argparse.Namespace) -> int:
    """Load, then check what cycle and daemon would refuse later (checks.py); exit 2 on any error."""
    from vcycle import connectors
    from vcycle.cli import checks

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_problems(exc.problems, "error", sys.stderr)
        sys.stderr.write(f"configuration invalid: {len(exc.problems)} error(s)\n")
        return EXIT_CONFIG
    errors, warnings = ([], []) if args.syntax_only else checks.offline(config)
    if args.online:
        errors += checks.online(config, lambda space: connectors.REGISTRY.load(space.api).make(space,
                                                                                             config.settings))
        warnings = [w for w in warnings if w.key != "user_data"]  # fetched and rendered online
    print_problems([*config.warnings, *warnings], "warning", sys.stderr)
    print_problems(errors, "error", sys.stderr)
    if errors:
        sys.stderr.write(f"configuration invalid: {len(errors)} error(s)\n")
        return EXIT_CONFIG
    if not args.quiet:
        describe(config, sys.stdout)
    return EXIT_OK


def _config(args: argparse.Namespace) -> Config:
    try:
        config = load_config(args.config, fetch_pipes=getattr(args, "fetch_pipes", False))
    except ConfigError as exc:
        print_problems(exc.problems, "error", sys.stderr)
        sys.stderr.write(f"configuration invalid: {len(exc.problems)} error(s); see vcycle check-config\n")
        raise CommandFailed(EXIT_CONFIG) from exc
    for warning in config.warnings:
        logging.getLogger("vcycle.config").warning("%s", warning)
    return config


def _spaces(config: Config, names: Sequence[str] | None) -> None:
    """CommandFailed (status 2) unless every ``--space`` given is a configured space."""
    unknown = [name for name in names or () if name not in config.spaces]
    if unknown:
        sys.stderr.write(f"no space {', '.join(unknown)} in the configuration (spaces: "
                         f"{', '.join(sorted(config.spaces)) or 'none'})\n")
        raise CommandFailed(EXIT_CONFIG)


def _store(config: Config, *, readonly: bool = False) -> Store:
    """The state store; ``readonly`` for the commands that only read (they write nothing, not even a lock)."""
    try:
        return Store.open(config.settings.state_url, readonly=readonly)
    except NoStore as exc:  # nothing has run yet: what there is to see is an empty store
        sys.stderr.write(f"note: {exc}; shown as empty\n")
        return Store.open("sqlite://")
    except StoreError as exc:
        sys.stderr.write(f"error: {mask_url(str(exc))}\n")
        raise CommandFailed(EXIT_FAILED) from exc


def _log_to(path: str | None) -> None:
    """Log to ``path`` instead of stderr (reopened when logrotate moves it)."""
    if not path:
        return
    try:
        handler: logging.Handler = logging.handlers.WatchedFileHandler(path)
    except OSError as exc:
        sys.stderr.write(f"error: cannot write the log file {path}: {exc.strerror}\n")
        raise CommandFailed(EXIT_FAILED) from exc
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().handlers[:] = [handler]


def cycle_once(args: argparse.Namespace) -> int:
    _log_to(args.log_file)
    config = _config(args)
    _spaces(config, args.space)
    try:
        with Locks(config):
            store = _store(config)
            holder = None
            if shared(store):  # other managers may act on this store: this run takes the free spaces' leases
                holder = Holder(store, args.space or config.spaces, config.settings, member=False).start()
                store.fence = holder
            manager = Manager(config, store, holder=holder)
            try:
                names = holder.holding() if holder is not None else list(args.space or ())
                if holder is not None:
                    for name in sorted(set(args.space or config.spaces) - set(names)):
                        sys.stderr.write(f"{name}: not cycled, another manager holds its lease\n")
                reports = manager.cycle(names) if names or holder is None else []
            finally:
                manager.close()
                if holder is not None:
                    holder.close()
    except LockHeld as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_BUSY
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    for report in reports:
        verdict = "ok" if report.ok else "FAILED: " + "; ".join(show.grouped_errors(e.as_dict() for e in report.errors))
        line = f"{report.space}: {report.counts.get('creates', 0)} created, {report.counts.get('deletes', 0)} " \
               f"deleted, {verdict}"
        if args.log_file:  # cron mails what a job prints: with a log file, the summary goes there
            logging.getLogger("vcycle.cli").info("%s", line)
        else:
            print(line)
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def daemon(args: argparse.Namespace) -> int:
    _log_to(args.log_file)
    config = _config(args)
    try:
        with Locks(config):
            try:  # a database server starting with this daemon (boot, a restart) is waited for
                store = Store.open_waiting(config.settings.state_url, say=lambda why: logging.getLogger(
                    "vcycle.cli").warning("state store not answering yet: %s", mask_url(why)))
            except StoreError as exc:
                sys.stderr.write(f"error: {mask_url(str(exc))}\n")
                return EXIT_FAILED
            runner = Daemon(args.config, config, store, max_cycles=args.cycles)
            runner.install_signals()  # before the endpoint answers: a SIGHUP then must reload, not kill
            background = None
            if config.settings.https_listen is not None:
                background = _endpoint_thread(config, store, runner)
            else:
                runner.on_reload.append(_unserved)
            try:
                return runner.run()
            finally:
                if background is not None:
                    background.stop()
    except LockHeld as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_BUSY


def _unserved(new: Config) -> None:
    if new.settings.https_listen is not None:
        logging.getLogger("vcycle.web").warning("https_listen is set now, but this daemon started without an "
                                                "endpoint: restart vcycle to serve it")


def _endpoint(config: Config, store: Store, fetcher: Fetcher | None = None) -> tuple[Any, Any]:
    """The endpoint's state and its server, or CommandFailed with the configuration problem printed."""
    from vcycle.web import app, server

    endpoint = app.build(config, store, render=app.user_data_renderer(fetcher))
    try:
        return endpoint, server.make_server(app.create_app(endpoint), config.settings)
    except ConfigError as exc:
        print_problems(exc.problems, "error", sys.stderr)
        raise CommandFailed(EXIT_CONFIG) from exc


def _endpoint_thread(config: Config, store: Store, runner: Daemon) -> Any:
    """The endpoint served in a thread of the daemon; a reload gives it the new configuration, and moves it
    when ``https_listen`` or its certificate and key change."""
    from vcycle.web import app, server

    endpoint = app.build(config, store, render=app.user_data_renderer(runner.manager.fetcher))
    endpoint.wake = runner.wake.set  # an interruption notice: a cycle now, to drain the machine within seconds
    try:
        served = server.Served(app.create_app(endpoint), config.settings)
        served.start()
    except ConfigError as exc:
        print_problems(exc.problems, "error", sys.stderr)
        raise CommandFailed(EXIT_CONFIG) from exc
    except OSError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise CommandFailed(EXIT_FAILED) from exc

    def reloaded(new: Config) -> None:
        endpoint.config = new
        served.reload(new.settings)

    runner.on_reload.append(reloaded)
    logging.getLogger("vcycle.web").info("HTTPS endpoint on %s", server.describe(config))
    return served


def serve(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.listen:
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, https_listen=args.listen))
    store = _store(config)
    _, uvicorn_server = _endpoint(config, store, Fetcher(template_cache(config.settings.state_dir)))
    from vcycle.web import server

    logging.getLogger("vcycle.web").info("HTTPS endpoint on %s", server.describe(config))
    uvicorn_server.run()  # until SIGTERM or SIGINT
    return EXIT_OK if uvicorn_server.started else EXIT_FAILED


def plan_command(args: argparse.Namespace) -> int:
    config = _config(args)
    _spaces(config, args.space)
    manager = Manager(config, _store(config, readonly=True), processes=1)
    failed = False
    for space in config.spaces.values():
        if args.space and space.name not in args.space:
            continue
        print(f"space {space.name}:")
        try:
            seen = observe(manager.context(space), manager.clock())
        except (VcycleError, ImportError) as exc:
            print(f"  cannot plan: {mask_url(str(exc))}")
            failed = True
            continue
        print(f"  {len(seen.synced.records)} machine(s) of ours, {seen.synced.foreign_machines} foreign; "
              f"{len(seen.synced.changes)} state change(s) to record")
        unconfirmed = show.unconfirmed_line(status.unconfirmed(seen.synced.records))
        if unconfirmed:
            print(f"  {unconfirmed}")
        for line in show.plan_lines(seen.synced.changes, seen.plan.decisions, each=args.machines):
            print(f"  {line}")
    print("(dry run: nothing was changed)")
    return EXIT_FAILED if failed else EXIT_OK


def status_command(args: argparse.Namespace) -> int:
    config = _config(args)
    collected = status.collect(config, _store(config, readonly=True), datetime.now(UTC))
    if args.json:
        json.dump(collected, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        show.show(collected, Console())
    return EXIT_OK


def _one_machine(store: Store, name: str, space: str | None) -> MachineRecord:
    found = store.find(name, space)
    if not found:
        sys.stderr.write(f"no machine named {name}" + (f" in space {space}" if space else "") + "\n")
        raise CommandFailed(EXIT_FAILED)
    if len(found) > 1:
        sys.stderr.write(f"{name} exists in spaces {', '.join(r.space for r in found)}: give --space\n")
        raise CommandFailed(EXIT_FAILED)
    return found[0]


def machines_list(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config, readonly=True)
    rows = [r for state in store.spaces().values() for r in state.records
            if (not args.space or r.space == args.space) and (not args.state or r.state.value == args.state)]
    print("SPACE\tMACHINETYPE\tNAME\tSTATE\tSINCE\tREASON")
    for r in sorted(rows, key=lambda r: (r.space, r.machinetype, r.name)):
        print(f"{r.space}\t{r.machinetype}\t{r.name}\t{r.state.value}\t{r.state_since.isoformat(timespec='seconds')}\t"
              f"{r.reason}")
    return EXIT_OK


def machines_history(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config, readonly=True)
    record = _one_machine(store, args.name, args.space)
    print(f"{record.name} ({record.machinetype} in {record.space}), now {record.state.value}")
    for change in store.history(record.space, record.name):
        print(f"  {change.at.isoformat(timespec='seconds')}  {change.state.value:<13}  {change.reason}")
    return EXIT_OK


def _update_space(store: Store, space: str, change: Callable[[SpaceState], dict[str, Any]]) -> None:
    """A read-modify-write of one space (Store.update); a space too busy to update is a failure."""
    try:
        store.update(space, change)
    except StaleState:
        sys.stderr.write(f"space {space} is too busy to update; try again\n")
        raise CommandFailed(EXIT_FAILED) from None


def machines_delete(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.stalled:
        return _delete_stalled(config, *args.stalled)
    if args.name is None:
        sys.stderr.write("name a machine, or --stalled SPACE MACHINETYPE\n")
        return EXIT_CONFIG
    store = _store(config)
    record = _one_machine(store, args.name, args.space)
    reason = f"operator: {args.reason}"

    def change(state: SpaceState) -> dict[str, Any]:
        current = next((r for r in state.records if r.name == record.name), None)
        if current is None:
            sys.stderr.write(f"{record.name} is already gone\n")
            raise CommandFailed(EXIT_FAILED)
        return {"records": [dataclasses.replace(current, delete_requested=reason)]}

    _update_space(store, record.space, change)
    print(f"{record.name} will be deleted by the next cycle ({reason})")
    return EXIT_OK


def _delete_stalled(config: Config, space: str, machinetype: str) -> int:
    if machinetype not in (config.spaces[space].machinetypes if space in config.spaces else {}):
        sys.stderr.write(f"no machinetype {machinetype} in space {space} in the configuration\n")
        return EXIT_CONFIG
    if config.spaces[space].machinetypes[machinetype].heartbeat_file is None:
        sys.stderr.write(f"machinetype {machinetype} in space {space} has no heartbeat_file: nothing stalls\n")
        return EXIT_CONFIG
    try:
        asked = stalled.confirm(config, _store(config), space, machinetype, datetime.now(UTC))
    except StaleState:
        sys.stderr.write(f"space {space} is too busy to update; try again\n")
        return EXIT_FAILED
    print(f"{len(asked)} machine(s) of {machinetype} in {space} with a stale heartbeat will be deleted by the next "
          "cycle" + (f": {' '.join(sorted(asked))}" if asked else ""))
    return EXIT_OK


def drain(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.space not in config.spaces:
        sys.stderr.write(f"no space {args.space} in the configuration\n")
        return EXIT_CONFIG
    if args.machinetype and args.machinetype not in config.spaces[args.space].machinetypes:
        sys.stderr.write(f"no machinetype {args.machinetype} in space {args.space}\n")
        return EXIT_CONFIG
    store = _store(config)
    target = args.machinetype or "*"

    def change(state: SpaceState) -> dict[str, Any]:
        draining = state.draining - {target} if args.undo else state.draining | {target}
        return {"draining": frozenset(draining)}

    _update_space(store, args.space, change)
    what = f"machinetype {args.machinetype}" if args.machinetype else "every machinetype"
    print(f"space {args.space}: {what} " + ("no longer drained" if args.undo else
                                            "drained: no new machines, running ones finish"))
    return EXIT_OK


def slurm_power(args: argparse.Namespace) -> int:
    from vcycle.cli.slurm import power

    return power(args, _config, _store)


def render_command(args: argparse.Namespace) -> int:
    """What a new machine of SPACE MACHINETYPE would get, prepared as a real create prepares it, with its size."""
    from vcycle import connectors
    from vcycle.connectors.base import fits
    from vcycle.core.options import looks_secret
    from vcycle.loop.launch import renderer, sample

    config = _config(args)
    space = config.spaces.get(args.space)
    mt = space.machinetypes.get(args.machinetype) if space else None
    if space is None or mt is None:
        sys.stderr.write(f"no machinetype {args.machinetype} in space {args.space}\n")
        return EXIT_CONFIG
    render = renderer(config.settings.manager_name, Fetcher(template_cache(config.settings.state_dir)))
    try:
        launch = sample(space, mt, manager=config.settings.manager_name, render=render, now=datetime.now(UTC),
                        reason="vcycle render")
    except VcycleError as exc:
        sys.stderr.write(f"cannot render: {exc}\n")
        return EXIT_FAILED
    data = launch.spec.user_data
    text = data.decode("utf-8", "replace")
    if not args.show_secrets:
        hidden = [launch.spec.token or ""] + [v for k, v in mt.user_data_options.items() if looks_secret(k)]
        for value in filter(None, hidden):
            text = text.replace(value, MASK)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
    limit = connectors.REGISTRY.load(space.api).max_user_data_bytes
    packed = len(gzip.compress(data, mtime=0))
    sys.stderr.write(f"# {len(data)} bytes ({packed} gzipped); {space.api} takes {limit} bytes: "
                     f"{fits(data, limit)}\n")
    return EXIT_OK


def _host_port(value: str) -> tuple[str, int]:
    try:
        return host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcycle", description="Keeps cloud spaces filled with pilot machines.")
    parser.add_argument("--version", action="version", version=f"vcycle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log decisions (INFO) to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", action="append", metavar="PATH",
                         help="a file or a directory of *.conf (repeatable); default: the old vcycle's locations")
        sub.set_defaults(run=run)
        return sub

    checking = command("check-config", check_config, "validate the configuration and print it, secrets masked")
    checking.add_argument("--quiet", action="store_true", help="print only errors and warnings (systemd's "
                                                               "ExecStartPre: not the whole configuration)")
    checking.add_argument("--syntax-only", action="store_true", help="only load the files (sections, keys, values): "
                                                                     "no certificates, templates or clouds, for a "
                                                                     "configuration checked away from its host")
    checking.add_argument("--online", action="store_true", help="also ask each cloud (credentials, flavors, images) "
                                                                "and fetch URL templates, changing nothing")
    once = command("cycle", cycle_once, "run one cycle of every space and exit (cron mode)")
    once.add_argument("--once", action="store_true", default=True, help="one cycle (the only mode; for clarity)")
    once.add_argument("--space", action="append", help="only this space (repeatable)")
    once.add_argument("--fetch-pipes", action="store_true", help="refresh http(s) vacuum pipes first")
    once.add_argument("--log-file", help="log here instead of stderr (reopened after logrotate)")
    run = command("daemon", daemon, "cycle every cycle_seconds until SIGTERM; SIGHUP reloads the configuration")
    run.add_argument("--log-file", help="log here instead of stderr (reopened after logrotate)")
    run.add_argument("--cycles", type=int, help="stop after this many cycles")
    run.add_argument("--fetch-pipes", action="store_true", default=True,
                     help="refresh http(s) vacuum pipes at start and at every SIGHUP (always done; accepted for "
                          "old command lines)")
    serving = command("serve", serve, "serve the HTTPS endpoint alone (the daemon serves it when https_listen is "
                                      "set)")
    serving.add_argument("--listen", type=_host_port, metavar="HOST:PORT", help="instead of [settings] https_listen")
    planning = command("plan", plan_command, "dry run: what the next cycle would do and why; changes nothing")
    planning.add_argument("--space", action="append", help="only this space (repeatable)")
    planning.add_argument("--machines", action="store_true",
                          help="each machine's change and decision on a line of its own (default: grouped)")
    show = command("status", status_command, "spaces, machines by state, backoffs, the last cycle")
    show.add_argument("--json", action="store_true", help="JSON instead of tables")
    machines = commands.add_parser("machines", help="list, explain or delete machines")
    verbs = machines.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, run_verb, text in (("list", machines_list, "machines the store holds, live ones"),
                                 ("history", machines_history, "every state change of one machine"),
                                 ("delete", machines_delete, "delete one machine at the next cycle")):
        sub = verbs.add_parser(name, help=text, description=text)
        sub.add_argument("--config", action="append", metavar="PATH")
        sub.add_argument("--space")
        sub.set_defaults(run=run_verb)
        if name == "list":
            sub.add_argument("--state", choices=[s.value for s in MachineState])
        elif name == "history":
            sub.add_argument("name")
        if name == "delete":
            sub.add_argument("name", nargs="?")
            sub.add_argument("--reason", default="deleted on request", help="recorded in the history")
            sub.add_argument("--stalled", nargs=2, metavar=("SPACE", "MACHINETYPE"),
                             help="instead: every running machine of the machinetype whose heartbeat is stale "
                                  "(after the mass-kill breaker held them)")
    rendering = command("render", render_command, "the user-data a new machine of a machinetype would get")
    rendering.add_argument("space")
    rendering.add_argument("machinetype")
    rendering.add_argument("--show-secrets", action="store_true", help="do not mask secret options")
    draining = command("drain", drain, "no new machines in a space or machinetype; running ones finish (machines "
                                       "whose HTCondor startd is in the pool are drained through it)")
    draining.add_argument("space")
    draining.add_argument("machinetype", nargs="?")
    draining.add_argument("--undo", action="store_true", help="end the drain")
    simulate.add(command, _config)
    for name, resuming, text in (("slurm-resume", True, "Slurm's ResumeProgram: machines for these cloud nodes"),
                                 ("slurm-suspend", False, "Slurm's SuspendProgram: delete these cloud nodes' "
                                                          "machines")):
        powering = command(name, slurm_power, text)
        powering.add_argument("nodes", metavar="NODELIST", help="a Slurm hostlist, as slurmctld gives it: cloud[1-3]")
        powering.set_defaults(resume=resuming)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "daemon" else logging.WARNING,
                        format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are its own, not vcycle's
    try:
        result: int = args.run(args)
        sys.stdout.flush()
    except CommandFailed as done:
        return done.status
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (vcycle plan | head): what it read was all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
